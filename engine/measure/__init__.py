"""What a generation costs: analytic FLOPs and KV bytes (costs), the GPU memory estimate behind
--dry-run (memory), and the harness behind `infinistar bench` (bench), with its typed report
(bench_report), random-weight models (random_weights), stage clocks and memory probes (clocks)
and the machine's peak FLOP/s and environment (machine).

May import: everything below it in the engine (it measures the real pipeline).
"""
