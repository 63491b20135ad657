"""`infinistar serve`: the engine behind an HTTP API and a web page, the model kept loaded.

A second renderer of the engine's events (the CLI is the first): it builds the same requests,
runs them through the CLI's generation path in one background worker that owns the device,
and never touches tensors. Needs the `serve` extra (FastAPI, uvicorn).
"""
