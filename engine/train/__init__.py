"""Training the tiny model on synthetic coloured-shape videos: the data (synthetic), the judge of
what a viewer sees (judge), the tuning and held-out cases it is asked on (evaluate), the run's
settings (config), the two phases (vae_phase, then transformer_phase on clips the trained VAE
encodes; its packed sequence attends through packed_attention) and the command that runs them
and writes the official folder layout (run; `python -m engine.train`).

May import: engine.model, engine.checkpoints, engine.media, engine.request, engine.presets, and (evaluate
only) the public API `engine.load_pipeline`.
"""
