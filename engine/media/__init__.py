"""Files in and out: reading images and videos (with their rotation, resampled to the model's
frame rate, windowed), writing MP4/PNG/lossless outputs with their metadata and sidecar
atomically, and the encoder settings that make a file a function of its frames.

May import: engine.errors and the standard media libraries (PyAV, Pillow). No model code.
"""
