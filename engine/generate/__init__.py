"""A request becomes frames: its segments planned (extend steps, --then/--story; torch-free), the
conditioning recipes (i2v, extend, interact), the one sampling loop every mode shares, and the
Pipeline that runs them, story segments included, and reports Events.

May import: engine.model, engine.media, engine.checkpoints, the vocabulary modules.
"""
