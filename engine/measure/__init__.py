"""What a generation costs: analytic FLOPs and KV bytes (costs), the GPU memory estimate behind
--dry-run (memory), and the harness behind `infinistar bench` (bench).

May import: everything below it in the engine (it measures the real pipeline).
"""
