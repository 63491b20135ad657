"""Weights and where they live: the hub (hub: cache layout, downloads with time-outs,
verification), safe reading of safetensors and .pth files with strict key checks (weights), model
folders and their `infinistar.json` (model_folder), and how components reach a device (loading:
dtype, offloading, torch.compile).

May import: engine.model, engine.presets, engine.errors (and engine.parallel for sharded loads).
"""
