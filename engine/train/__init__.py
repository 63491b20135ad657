"""Training the tiny model on synthetic coloured-shape videos: the data (synthetic), the judge of
what a viewer sees (judge), the run's settings (config), the two phases (vae_phase, then
transformer_phase on clips the trained VAE encodes) and the command that runs them and writes the
official folder layout (run; `python -m engine.train`).

May import: engine.model, engine.checkpoints, engine.presets.
"""
