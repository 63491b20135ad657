"""MP4/PNG writing and reading: round trips, metadata, atomicity, no clobbering, conversions."""
import json
import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine.media import video_io
from engine.errors import MediaError, OutputExistsError, OutputPathError
from engine.request import Result

META = {"prompt": "a fox — in snow", "seed": 41, "mode": "t2v"}


def gradient(frames: int, height: int = 32, width: int = 48) -> torch.Tensor:
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    rgb = torch.stack([x * 5, y * 7, (t * 20 + x + y) % 256], dim=-1)
    return rgb.clamp(0, 255).to(torch.uint8)


def test_mp4_round_trip_with_tags(tmp_path):
    frames = gradient(9)
    path = video_io.write_mp4(frames, tmp_path / "clip.mp4", fps=16, metadata=META, crf=0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 16
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        tags = container.metadata
    assert decoded.shape == (9, 32, 48, 3)
    assert np.abs(decoded.astype(int) - frames.numpy().astype(int)).mean() < 3
    stored = {**META, "encoding": json.loads(tags["comment"])["encoding"]}
    assert stored["encoding"]["codec"] == "libx264" and stored["encoding"]["crf"] == "0"  # the writer's own record
    assert json.loads(tags["comment"]) == stored and tags["title"] == META["prompt"]
    assert json.loads((tmp_path / "clip.mp4.json").read_text(encoding="utf-8")) == stored
    assert video_io.read_metadata(path) == stored
    video, fps = video_io.read_video(path)
    assert video.shape == (9, 32, 48, 3) and video.dtype == torch.uint8 and fps == 16
    assert video_io.media_info(path)["frames"] == 9


def test_png_text_chunks_and_exact_pixels(tmp_path):
    frame = gradient(1)
    path = video_io.write_png(frame[0], tmp_path / "still.png", metadata=META)
    with Image.open(path) as image:
        assert json.loads(image.text["infinistar"]) == META and image.text["Description"] == META["prompt"]
    assert torch.equal(video_io.read_image(path), frame[0])
    assert video_io.read_metadata(path) == META
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_result_picks_format_and_checks_suffix(tmp_path):
    video = Result(frames=gradient(5), fps=8, metadata=META)
    still = Result(frames=gradient(1), fps=8, metadata=META)
    assert video_io.write_result(video, tmp_path / "v.mp4").suffix == ".mp4"
    assert video_io.write_result(still, tmp_path / "i.png").suffix == ".png"
    with pytest.raises(OutputPathError, match="must end in .mp4"):
        video_io.write_result(video, tmp_path / "v.png")
    with pytest.raises(OutputPathError, match="must end in .png"):
        video_io.write_result(still, tmp_path / "i.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "i.png.json", "v.mp4", "v.mp4.json"]


def test_no_clobber_unless_overwrite(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        video_io.write_mp4(gradient(3), path, fps=8)
    assert path.read_bytes() == b"precious"
    video_io.write_mp4(gradient(3), path, fps=8, overwrite=True)
    assert video_io.read_video(path)[0].shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4", "v.mp4.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_mp4_leaves_nothing(tmp_path, error):
    with pytest.raises(error):
        with video_io.VideoWriter(tmp_path / "v.mp4", fps=8, metadata=META) as writer:
            writer.write(gradient(3))
            assert len(list(tmp_path.iterdir())) == 1  # only the hidden temp file so far
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_png_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        video_io.write_png(gradient(1)[0], tmp_path / "i.png")
    assert list(tmp_path.iterdir()) == []


def test_streaming_chunks(tmp_path):
    frames = gradient(7)
    with video_io.VideoWriter(tmp_path / "v.mp4", fps=8) as writer:
        writer.write(frames[:4])
        writer.write(frames[4:].numpy())
    assert writer.frames_written == 7 and video_io.read_video(tmp_path / "v.mp4")[0].shape[0] == 7
    with pytest.raises(ValueError, match="frame size changed"):
        with video_io.VideoWriter(tmp_path / "w.mp4", fps=8) as writer:
            writer.write(frames[:2])
            writer.write(gradient(2, 16, 16))
    assert not (tmp_path / "w.mp4").exists()


def test_output_directory_is_created_or_refused(tmp_path):
    assert video_io.write_png(gradient(1)[0], tmp_path / "a" / "b" / "i.png").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="cannot create output directory"):
        video_io.write_png(gradient(1)[0], tmp_path / "file" / "i.png")


@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() == 0, reason="root can write anywhere")
def test_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match="not writable"):
        video_io.write_png(gradient(1)[0], locked / "i.png")


def test_read_image_conversions(tmp_path):
    Image.new("RGBA", (2, 1), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert video_io.read_image(tmp_path / "clear.png").tolist() == [[[255, 255, 255]] * 2]  # onto white
    Image.new("RGBA", (1, 1), (10, 20, 30, 255)).save(tmp_path / "solid.png")
    assert video_io.read_image(tmp_path / "solid.png").tolist() == [[[10, 20, 30]]]
    Image.fromarray(np.array([[65535, 0]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert video_io.read_image(tmp_path / "deep.png").tolist() == [[[255] * 3, [0] * 3]]
    palette = Image.new("P", (1, 1))
    palette.putpalette([200, 100, 50] + [0] * 765)
    palette.save(tmp_path / "pal.png")
    assert video_io.read_image(tmp_path / "pal.png").tolist() == [[[200, 100, 50]]]
    Image.new("L", (3, 2), 7).save(tmp_path / "gray.jpg")
    assert video_io.read_image(tmp_path / "gray.jpg").shape == (2, 3, 3)


def test_unreadable_media_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    Image.new("RGB", (8, 8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:40])
    for call, name, message in [
        (video_io.read_image, "junk.png", "cannot read image"),
        (video_io.read_image, "cut.png", "cannot read image"),
        (video_io.read_video, "junk.mp4", "cannot read"),
        (video_io.read_metadata, "junk.mp4", "cannot read"),
        (video_io.read_video, "missing.mp4", "no such file"),
        (video_io.read_image, ".", "is not a file"),
    ]:
        with pytest.raises(MediaError, match=message):
            call(tmp_path / name)


def test_rejects_bad_frame_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8 frames"):
        video_io.write_mp4(torch.zeros(2, 8, 8, 3), tmp_path / "f.mp4", fps=8)
    with pytest.raises(ValueError, match="even frame sizes"):
        video_io.write_mp4(torch.zeros(2, 7, 8, 3, dtype=torch.uint8), tmp_path / "odd.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []
