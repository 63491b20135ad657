"""Several processes at once on torch.distributed: the torchrun world and the sharing of a batch
among ranks (ranks), and one video's transformer split across ranks (tensor_parallel).

May import: engine.model, engine.checkpoints, engine.presets, engine.errors.
"""
