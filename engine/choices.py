"""The names each engine knob accepts (the one list the engine checks against and the front ends
offer as choices) and the default video quality. Torch-free, so `infinistar --help` can list them
without loading torch."""

OFFLOAD_MODES = ("none", "model", "blocks")  # engine.checkpoints.offload
WEIGHT_MODES = ("bf16", "int8", "fp8")  # engine.model.eight_bit; "bf16" = the float path (fp32 on CPU)
DTYPES = ("auto", "fp32", "bf16")  # engine.checkpoints.speed
# engine.parallel.tensor_parallel; "none" shards a batch when torchrun starts several ranks
PARALLEL_MODES = ("none", "tensor")
GUIDANCE = ("apg", "cfg")  # engine.presets.SamplingConfig.guidance: adaptive projected or classifier-free

DEFAULT_CRF = 18  # H.264 quality of a written video (0-51, lower is better and bigger): the CLI's --crf, the server's crf
