"""The MP4 writer is a function of its frames: no dependence on heap contents or CPU count; lossless is exact."""
import ctypes
import ctypes.util
import platform
import sys

import numpy as np
import pytest
import torch

from engine.media import encoding, video_io


def moving_frames(count: int = 17, height: int = 48, width: int = 64) -> np.ndarray:
    """Textured squares that move: B-frames and x264's MB-tree lookahead have real work to do
    (64 px = 4 macroblocks, a width whose MB-tree rows AVX-512 x264 gets wrong)."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        frame = np.stack([(x * 3 + t) % 256, (y * 5) % 256, ((x ^ y) * 7) % 256], -1)
        frame[10:26, (3 * t) % 48:(3 * t) % 48 + 16] = (230, 40, 40)
        frames.append(frame)
    return np.stack(frames).astype(np.uint8)


def _dirty_heap(byte: int) -> None:
    """Leave freed heap blocks (the ones the next encoder will be given) filled with `byte`."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for size in [64 << i for i in range(15)] * 8:
        block = libc.malloc(size + 64)
        ctypes.memset(block, byte, size + 64)
        blocks.append(block)
    for block in blocks:
        libc.free(block)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dirties glibc's heap through ctypes")
def test_the_same_frames_give_the_same_file_whatever_the_heap_held(tmp_path):
    # Before the fix, on an AVX-512 CPU: one file after a 0x00 heap, another after 0xFF, another after 0x80.
    frames = moving_frames()
    files = []
    for run, byte in enumerate((0x00, 0xFF, 0x80, 0x00, 0x5A)):
        _dirty_heap(byte)
        files.append(video_io.write_mp4(frames, tmp_path / f"{run}.mp4", 16, metadata={"seed": 1}).read_bytes())
    assert all(data == files[0] for data in files[1:])


def test_x264_runs_a_fixed_thread_layout_without_avx512():
    params = dict(item.split("=") for item in encoding.x264_params().split(":"))
    assert params["threads"] == str(encoding.X264_THREADS)
    assert params["sliced-threads"] == "0" and params["lookahead-threads"] == "1"
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "asm" in params or params.get("mbtree") == "0"
        if "asm" in params:
            assert int(params["asm"]) & encoding.X264_CPU_AVX512 == 0
            assert int(params["asm"]) != 0  # the other SIMD levels stay on


def test_encoding_is_recorded_in_the_metadata(tmp_path):
    path = video_io.write_mp4(moving_frames(5), tmp_path / "v.mp4", 8, metadata={"seed": 3}, crf=20)
    meta = video_io.read_metadata(path)
    assert meta["seed"] == 3
    assert meta["encoding"] == {"codec": "libx264", "pix_fmt": "yuv420p", "lossless": False, "crf": "20",
                                "x264-params": encoding.x264_params()}


@pytest.mark.parametrize("height, width", [(48, 64), (33, 47)])  # RGB 4:4:4 also takes odd sizes
def test_lossless_mp4_decodes_to_exactly_the_frames(tmp_path, height, width):
    rng = np.random.default_rng(height)
    frames = rng.integers(0, 256, (9, height, width, 3), dtype=np.uint8)  # noise: nothing to hide in
    path = video_io.write_mp4(frames, tmp_path / "exact.mp4", 16, metadata={"seed": 2}, lossless=True)
    decoded, fps = video_io.read_video(path)
    assert torch.equal(decoded, torch.from_numpy(frames)) and fps == 16
    assert video_io.read_metadata(path)["encoding"]["lossless"] is True
    info = video_io.media_info(path)
    assert (info["kind"], info["codec"], info["width"], info["height"], info["frames"]) == (
        "video", "h264", width, height, 9)
