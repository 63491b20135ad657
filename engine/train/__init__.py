"""Training the tiny model on synthetic coloured-shape videos: the data (synthetic), the judge of
what a viewer sees (judge) and the training loop (loop; `python -m engine.train`).

May import: engine.model, engine.checkpoints, engine.presets.
"""
