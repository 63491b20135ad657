"""Files in and out, one room each: input files (files: checks, sha256), reading images (images:
bomb-safe decode, the official transform) and videos (videos: upright, resampled to the model's
frame rate, windowed), writing MP4/PNG/lossless outputs with their metadata and sidecar
atomically (writers, atomic, encoding: settings that make a file a function of its frames), and
what a file is and says (probe). `video_io` gathers the names the front ends use.

May import: engine.errors and the standard media libraries (PyAV, Pillow). No model code.
"""
