"""infinistar engine: everything that touches tensors. Never imports the CLI, never prints."""

__version__ = "0.1.0"
