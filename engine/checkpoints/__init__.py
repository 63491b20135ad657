"""Weights and where they live: the hub cache and downloads (with time-outs), safe reading of
safetensors and .pth files with strict key checks, model folders (`infinistar.json`), and how
components reach a device: dtype, offloading, torch.compile.

May import: engine.model, engine.presets, engine.errors (and engine.parallel for sharded loads).
"""
