"""The frames extend conditions on: the official --from-start selection, the time-based end window
read with a seek, and rotated (phone) videos shown upright."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from engine.media.images import transform_image
from engine.media.videos import ShortVideoError, official_indices, read_resampled, read_start
from cli_fakes import error_line, invoke

BITS = 6  # frame numbers up to 63 as six black/white stripes


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i shows i in binary: stripe b (10 px wide) is white when bit b of i is set."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    for i in range(count):
        for b in range(BITS):
            if (i % 2**BITS) >> b & 1:
                frames[i, :, 10 * b:10 * b + 10] = 255
    return frames


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """Inverse of numbered_frames (frames [T, 48, 64, 3])."""
    stripes = [frames[:, 8:40, 10 * b + 2:10 * b + 8].float().mean(dim=(1, 2, 3)) > 127 for b in range(BITS)]
    return [sum(int(stripes[b][t]) << b for b in range(BITS)) for t in range(frames.shape[0])]


def write_clip(path: Path, frames: np.ndarray, fps, gop: int = 250, rotation: int = 0) -> Path:
    """An H.264 MP4 (lossless qp 0) with a keyframe every `gop` frames and an optional display rotation."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p"
        stream.options = {"qp": "0", "g": str(gop), "keyint_min": str(gop)}
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tiny_size(width: int, height: int) -> tuple[int, int]:
    return 48, 64


# Hand-computed: linspace(0, ceil(fps * 1 s) - 1, 17) rounded down, as numpy's dtype=int does.
OFFICIAL = {
    5: [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4],  # 4k/16
    16: [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],  # 15k/16
    24: [0, 1, 2, 4, 5, 7, 8, 10, 11, 12, 14, 15, 17, 18, 20, 21, 23],  # 23k/16
    30: [0, 1, 3, 5, 7, 9, 10, 12, 14, 16, 18, 19, 21, 23, 25, 27, 29],  # 29k/16
}


@pytest.mark.parametrize("fps", sorted(OFFICIAL))
def test_from_start_picks_the_official_frames(tmp_path, fps):
    assert official_indices(fps, 1.0, 17) == OFFICIAL[fps]
    clip = write_clip(tmp_path / f"{fps}.mp4", numbered_frames(2 * fps), fps)
    frames, facts = read_start(clip, 16, 1.0, 17, tiny_size, transform_image)
    assert frame_numbers(frames) == OFFICIAL[fps] and facts["source_frames"] == OFFICIAL[fps]
    assert facts["decoded_frames"] == fps  # decoding stopped after the first second
    with pytest.raises(ShortVideoError, match=r"too short \(0.80 s\): --from-start conditions on its first 1 s"):
        read_start(write_clip(tmp_path / "short.mp4", numbered_frames(4), 5), 16, 1.0, 17, tiny_size, transform_image)


def test_official_selection_at_480p():
    # get_clip(0, 5, 81) of a 16 fps video: 80 of the 81 frames are one earlier than frame-for-frame.
    assert official_indices(16, 5.0, 81) == [0] + list(range(80))
    ntsc = official_indices(30000 / 1001, 5.0, 81)
    assert ntsc[-1] == 149 and ntsc[:4] == [0, 1, 3, 5]  # ceil(29.97 * 5) = 150 frames stretched


@pytest.mark.parametrize("fps", [24, 30, 10])
def test_end_window_seek_gives_the_frames_of_a_full_read(tmp_path, fps):
    count = 12 * fps  # 12 s, a keyframe every second
    clip = write_clip(tmp_path / "long.mp4", numbered_frames(count), fps, gop=fps)
    full, full_facts = read_resampled(clip, 16, tiny_size, transform_image)
    tail, facts = read_resampled(clip, 16, tiny_size, transform_image, last=17)
    assert facts.get("seek") and facts["frames"] == count == full_facts["frames"]
    assert facts["decoded_frames"] < count // 3  # only about the last 3 s were decoded
    assert facts["source_frames"] == full_facts["source_frames"][-17:]
    assert facts["resampled_frames"] == full_facts["resampled_frames"] == len(full)
    assert torch.equal(tail, full[-17:])
    expected = [math.floor(k * Fraction(fps, 16)) % 2**BITS for k in range(len(full) - 17, len(full))]
    assert frame_numbers(tail) == expected


def test_short_videos_are_read_whole(tmp_path):
    clip = write_clip(tmp_path / "short.mp4", numbered_frames(40), 16, gop=8)
    frames, facts = read_resampled(clip, 16, tiny_size, transform_image, last=17)
    assert "seek" not in facts and facts["decoded_frames"] == 40
    assert frame_numbers(frames) == list(range(23, 40))


def _displayed() -> np.ndarray:
    """What a player shows: 64x48, a red block top left, a green one bottom right."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:12, :16] = (255, 0, 0)
    image[-12:, -16:] = (0, 255, 0)
    return image


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_videos_are_read_upright(tmp_path, rotation):
    # Stored turned the other way; the display matrix turns it back (counter-clockwise degrees).
    stored = np.rot90(_displayed(), k=-rotation // 90)
    clip = write_clip(tmp_path / "phone.mp4", np.stack([stored] * 20), 16, rotation=rotation)
    seen = []

    def size_for(width: int, height: int) -> tuple[int, int]:
        seen.append((width, height))
        return 48, 64

    frames, facts = read_resampled(clip, 16, size_for, transform_image)
    assert seen == [(64, 48)] and facts["rotation"] == rotation % 360
    assert np.abs(frames[0].numpy().astype(int) - _displayed()).max() <= 2
    start, _ = read_start(clip, 16, 1.0, 17, size_for, transform_image)
    assert torch.equal(start[0], frames[0])


def test_extend_of_a_rotated_clip_through_the_cli(clean_env):
    stored = np.rot90(_displayed(), k=1)  # shown after a quarter turn clockwise (rotation -90), like a phone
    write_clip(clean_env / "phone.mp4", np.stack([stored] * 24), 16, rotation=-90)
    result = invoke("--device", "cpu", "extend", "phone.mp4", "--model", "tiny", "--seed", "1", "-o", "out.mp4")
    assert result.exit_code == 0, result.stderr
    with av.open(str(clean_env / "out.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert first.shape == (48, 64, 3)
    assert first[:12, :16, 0].mean() > 200 and first[:12, :16, 1].mean() < 60  # red stays top left


def test_from_start_on_a_too_short_video_is_one_line(clean_env):
    write_clip(clean_env / "short.mp4", numbered_frames(10), 16)
    result = invoke("--device", "cpu", "extend", "short.mp4", "--model", "tiny", "--from-start", "--seed", "1",
                    "-o", "out.mp4")
    assert result.exit_code == 1
    assert "short.mp4 is too short (0.62 s): --from-start conditions on its first 1 s" in error_line(result)
    assert not (clean_env / "out.mp4").exists()
