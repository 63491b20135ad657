"""How frames become H.264: encoder settings that make an MP4 a function of its frames alone.

Why the settings are pinned (measured; tests/test_encoding.py keeps it true):

- libx264's AVX-512 kernels read memory they never wrote. On an AVX-512 CPU the same frames gave
  a different file depending on what the process's heap held before the encoder allocated its
  buffers: filling freed heap blocks with 0x00 before each encode gave one file every time, 0xFF
  another, 0x80 a third; a process that had run the model (or just encoded before) had left other
  bytes there, so the CLI's single write varied from run to run. The path is x264's MB-tree
  lookahead (mbtree=0 or rc-lookahead=0 removed the variation) on frames whose width in
  macroblocks is not a multiple of 8 (64 px: 4 MBs, 832 px at 480p: 52 MBs; 1280 px: 80 MBs was
  stable). With every other SIMD level x264 detects (up to AVX2) the output no longer depends on the
  heap, and with a zeroed heap it equals the AVX-512 output. So x264 runs with its own CPU
  detection minus AVX-512. The RGB -> YUV conversion (libswscale) was stable in every variant tried
  (shared or fresh context, 0/1/2 threads, after running torch) and is left as it is.
- x264's bitstream depends on its thread layout, and by default that follows the number of CPUs
  (libavcodec also turns on sliced threads): a fixed count of frame threads makes the file the
  same under `taskset`, in a container with fewer cores, or with OMP_NUM_THREADS set.

A lossless encode (libx264rgb, RGB 4:4:4 at qp 0) decodes back to exactly the frames given.
"""
from __future__ import annotations

import ctypes
import functools
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.choices import DEFAULT_CRF

# x264.h: X264_CPU_AVX512 (AVX-512 F, CD, BW, DQ, VL).
X264_CPU_AVX512 = 1 << 16
X264_THREADS = 4
_X86_64 = {"x86_64", "amd64", "x64"}


@dataclass(frozen=True)
class Encoding:
    """What a video stream is encoded with; `describe()` is what the file's metadata records."""

    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...]

    @property
    def lossless(self) -> bool:
        return self.codec == "libx264rgb"

    def stream_options(self) -> dict[str, str]:
        return dict(self.options)

    def describe(self) -> dict:
        return {"codec": self.codec, "pix_fmt": self.pix_fmt, "lossless": self.lossless, **self.stream_options()}


def h264(crf: int = DEFAULT_CRF, lossless: bool = False) -> Encoding:
    """H.264 settings: yuv420p at quality `crf`, or RGB 4:4:4 at qp 0 (exact) when `lossless`."""
    params = ("x264-params", x264_params())
    if lossless:
        return Encoding("libx264rgb", "rgb24", (("qp", "0"), params))
    return Encoding("libx264", "yuv420p", (("crf", str(int(crf))), params))


@functools.lru_cache(maxsize=None)
def x264_params() -> str:
    """`x264-params` value: fixed frame threads, and on x86-64 the detected CPU flags minus AVX-512."""
    params = [f"threads={X264_THREADS}", "sliced-threads=0", "lookahead-threads=1"]
    if platform.machine().lower() in _X86_64:
        flags = _x264_cpu_flags()
        if flags is not None:
            params.append(f"asm={flags & ~X264_CPU_AVX512}")
        else:  # x264's own detection is out of reach: keep its AVX-512 kernels off the MB-tree path
            params.append("mbtree=0")
    return ":".join(params)


def _x264_cpu_flags() -> Optional[int]:
    """What the libx264 that PyAV uses detects on this CPU (x264_cpu_detect), or None if unreachable."""
    for path in _libx264_candidates():
        try:
            detect = ctypes.CDLL(str(path)).x264_cpu_detect
        except (OSError, AttributeError):
            continue
        detect.restype = ctypes.c_uint32
        detect.argtypes = []
        return int(detect())
    return None


def _libx264_candidates() -> list[Path]:
    import av  # loads libavcodec, and with it libx264

    found = []
    maps = Path("/proc/self/maps")
    if maps.is_file():  # Linux: the very library that is loaded
        try:
            found += [Path(p) for p in re.findall(r"(/\S*libx264[^/\s]*\.so[^/\s]*)", maps.read_text())]
        except OSError:
            pass
    package = Path(av.__file__).parent
    for folder in (package.parent / "av.libs", package / ".dylibs", package):  # wheel layouts
        if folder.is_dir():
            found += sorted(folder.glob("libx264*")) + sorted(folder.glob("x264*.dll"))
    if sys.platform.startswith("linux"):
        found.append(Path("libx264.so"))
    return list(dict.fromkeys(found))
