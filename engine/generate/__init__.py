"""A request becomes frames: the conditioning recipes (i2v, extend, interact), the one sampling
loop every mode shares, story segments, and the Pipeline that runs them and reports Events.

May import: engine.model, engine.media, engine.checkpoints, the vocabulary modules.
"""
