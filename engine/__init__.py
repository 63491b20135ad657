"""infinistar engine: everything that touches tensors. Never imports the CLI, never prints."""

__version__ = "0.1.0"

# Loaded on first use so `import engine` (and so `infinistar --help`) stays free of torch.
_LAZY = {"load_pipeline": "engine.pipeline", "Pipeline": "engine.pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
