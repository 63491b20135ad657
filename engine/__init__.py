"""infinistar engine: everything that touches tensors, weights and media. Never imports the CLI,
never prints; it reports progress through `Event`s.

Layers (ARCHITECTURE.md), lowest first; a module imports only from its own layer or below:
  errors, choices, request, presets, validation  shared vocabulary, torch-free
  model/        the networks and the token layout they are built around
  media/        files in and out (images, videos, atomic writes)
  checkpoints/  weights, where they live and how they reach a device (dtype, offload, compile)
  parallel/     several processes: torchrun ranks and tensor parallelism
  generate/     a request becomes frames: conditioning, the one sampling loop, the pipeline
  measure/      costs, memory estimates, the bench harness
  train/        training the tiny model (`python -m engine.train`)

This module is the public API the front ends (infinistar_cli, infinistar_server) use. Names are
loaded on first use, so `import engine` (and so `infinistar --help`) stays free of torch.
"""

__version__ = "0.1.0"

# name -> "module" (the module itself) or "module:attribute"
_PUBLIC = {
    # vocabulary (torch-free)
    "presets": "engine.presets",
    "validation": "engine.validation",
    "RESOLUTIONS": "engine.validation:RESOLUTIONS",
    "GenerationRequest": "engine.request:GenerationRequest",
    "Event": "engine.request:Event",
    "Result": "engine.request:Result",
    "sampling_value_problem": "engine.request:sampling_value_problem",
    "InfinistarError": "engine.errors:InfinistarError",
    "OutputExistsError": "engine.errors:OutputExistsError",
    "OFFLOAD_MODES": "engine.choices:OFFLOAD_MODES",
    "WEIGHT_MODES": "engine.choices:WEIGHT_MODES",
    "DTYPES": "engine.choices:DTYPES",
    "PARALLEL_MODES": "engine.choices:PARALLEL_MODES",
    "GUIDANCE": "engine.choices:GUIDANCE",
    "DEFAULT_CRF": "engine.choices:DEFAULT_CRF",
    # generation
    "load_pipeline": "engine.generate.pipeline:load_pipeline",
    "Pipeline": "engine.generate.pipeline:Pipeline",
    "frames_for": "engine.generate.pipeline:frames_for",
    "check_input": "engine.media.probe:check_input",
    "aspect_h_div_w": "engine.generate.conditioning:aspect_h_div_w",
    "check_length": "engine.generate.segments:check_length",
    "plan_segments": "engine.generate.segments:plan_segments",
    # files, weights, processes, measurement
    "video_io": "engine.media.video_io",
    "hub": "engine.checkpoints.hub",
    "preset_for_folder": "engine.checkpoints.model_folder:preset_for_folder",
    "ranks": "engine.parallel.ranks",
    "World": "engine.parallel.ranks:World",
    "tensor_parallel": "engine.parallel.tensor_parallel",
    "memory": "engine.measure.memory",
    "bench": "engine.measure.bench",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value
