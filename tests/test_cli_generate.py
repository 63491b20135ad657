"""t2v/t2i through the CLI with a fake pipeline: option resolution, outputs, batches, errors."""
import json
import os
from pathlib import Path

import av
import pytest
import torch

from cli_fakes import error_line, fake_frames, invoke
from engine.media import video_io
from engine.errors import InfinistarError


def frames_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_t2v_writes_named_mp4_with_metadata(fake):
    result = invoke("t2v", "A cat, surfing!", "--seed", "5")
    assert result.exit_code == 0, result.stderr
    path = Path("infinistar_a-cat-surfing_5.mp4")
    assert result.stdout.strip() == str(path)
    assert frames_of(path) == 9
    meta = video_io.read_metadata(path)
    assert (meta["seed"], meta["prompt"], meta["mode"], meta["model"]) == (5, "A cat, surfing!", "t2v", "720p")
    assert meta["preset"] == "720p"  # the engine's metadata is kept
    assert fake.loads == [("720p", "auto")]
    request = fake.requests[0]
    assert (request.mode, request.seconds, request.cfg, request.prompt_decoration) == ("t2v", None, None, None)


def test_seconds_10_picks_480p(fake):
    result = invoke("t2v", "waves", "--seconds", "10", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert fake.loads[0][0] == "480p" and fake.requests[0].seconds == 10


def test_10_seconds_at_720p_is_refused_before_loading(fake):
    result = invoke("t2v", "waves", "--res", "720p", "--seconds", "10")
    assert result.exit_code == 2
    assert "not available at 720p" in error_line(result) and "--res 480p" in error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake.loads == []


def test_other_presets_have_their_own_seconds(fake):
    result = invoke("--device", "cpu", "t2v", "x", "--model", "tiny", "--seconds", "1", "--seed", "2")
    assert result.exit_code == 0, result.stderr
    assert fake.loads == [("tiny", "cpu")] and fake.requests[0].seconds == 1
    result = invoke("t2v", "x", "--model", "tiny", "--seconds", "3")
    assert result.exit_code == 2 and "3 s videos are not available at tiny, which makes 1 or 2 s" in error_line(result)


def test_model_directory_is_left_to_the_engine(fake):
    Path("weights").mkdir()
    result = invoke("t2v", "x", "--model", "./weights", "--seconds", "7", "--seed", "1")
    assert result.exit_code == 1  # the fake engine knows no such model; seconds are its business
    assert error_line(result).startswith("Error: unknown preset './weights'")


def test_model_and_res_together_is_an_error(fake):
    result = invoke("t2v", "x", "--model", "tiny", "--res", "480p")
    assert result.exit_code == 2 and "not both" in error_line(result)


def test_unknown_preset_is_refused_before_loading(fake):
    result = invoke("t2v", "x", "--model", "nope", "--seed", "1")
    assert result.exit_code == 1 and error_line(result).startswith("Error: unknown preset 'nope'")
    assert "720p" in error_line(result) and len(result.stderr.strip().splitlines()) == 1
    assert fake.loads == []


def test_options_reach_the_request(fake):
    result = invoke("t2v", "x", "--seed", "3", "--cfg", "5", "--tau-image", "0.7", "--tau-video", "0.3",
                    "--negative-prompt", "blurry", "--no-prompt-decoration", "--fps", "12", "--crf", "0")
    assert result.exit_code == 0, result.stderr
    request = fake.requests[0]
    assert (request.cfg, request.tau_image, request.tau_video) == (5.0, 0.7, 0.3)
    assert request.negative_prompt == "blurry" and request.prompt_decoration is False
    with av.open("infinistar_x_3.mp4") as container:
        assert container.streams.video[0].average_rate == 12


def test_one_output_per_seed_with_template(fake):
    result = invoke("t2v", "a dog", "--seed", "1", "--seed", "2", "-o", "out/{index:02d}_{slug}_{seed}")
    assert result.exit_code == 0, result.stderr
    paths = [Path("out/01_a-dog_1.mp4"), Path("out/02_a-dog_2.mp4")]
    assert result.stdout.split() == [str(p) for p in paths]
    assert fake.loads == [("720p", "auto")] and [r.seed for r in fake.requests] == [1, 2]
    first, _ = video_io.read_video(paths[0])
    second, _ = video_io.read_video(paths[1])
    assert not torch.equal(first, second)


def test_fixed_output_with_two_seeds_is_refused(fake):
    result = invoke("t2v", "a dog", "--seed", "1", "--seed", "2", "-o", "dog.mp4")
    assert result.exit_code == 1 and "{seed}" in error_line(result)
    assert fake.loads == [] and not Path("dog.mp4").exists()


@pytest.mark.parametrize("output, message", [
    ("x_{foo}.mp4", "unknown placeholder {foo}"),
    ("x_{seed.mp4", "bad output template"),
    ("x.png", "must end in .mp4"),
])
def test_bad_output_names(fake, output, message):
    result = invoke("t2v", "x", "--seed", "1", "-o", output)
    assert result.exit_code == 1 and message in error_line(result)
    assert fake.loads == []


def test_output_directory_gets_default_name(fake):
    Path("clips").mkdir()
    result = invoke("t2v", "x", "--seed", "4", "-o", "clips")
    assert result.exit_code == 0, result.stderr
    assert Path("clips/infinistar_x_4.mp4").is_file()


def test_random_seed_is_reported_and_recorded(fake):
    result = invoke("t2v", "x")
    assert result.exit_code == 0, result.stderr
    seed = fake.requests[0].seed
    assert f"seed {seed}" in result.stderr
    assert video_io.read_metadata(result.stdout.strip())["seed"] == seed


def test_t2i_writes_png(fake):
    result = invoke("t2i", "a lighthouse", "--seed", "9")
    assert result.exit_code == 0, result.stderr
    path = Path("infinistar_a-lighthouse_9.png")
    assert torch.equal(video_io.read_image(path), fake_frames(9, 1)[0])
    assert fake.requests[0].mode == "t2i" and fake.requests[0].seconds is None
    assert invoke("t2i", "x", "--seconds", "5").exit_code == 2  # images have no length


def test_json_lines(fake):
    result = invoke("t2v", "x", "--seed", "1", "--seed", "2", "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["status"], r["seed"], r["prompt"]) for r in records] == [("written", 1, "x"), ("written", 2, "x")]
    assert all(Path(r["path"]).is_file() and r["timings"]["total"] >= 0 for r in records)
    assert "load" in records[0]["timings"] and "sample" in records[0]["timings"]
    assert "sampling" in result.stderr  # progress goes to stderr


def test_quiet_prints_only_results(fake):
    result = invoke("--quiet", "t2v", "x", "--seed", "1")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.strip() == "infinistar_x_1.mp4"


def test_existing_output_needs_overwrite(fake):
    assert invoke("t2v", "x", "--seed", "1").exit_code == 0
    before = Path("infinistar_x_1.mp4").read_bytes()
    result = invoke("t2v", "x", "--seed", "1")
    assert result.exit_code == 1 and "already exists; use --overwrite" in error_line(result)
    assert len(fake.loads) == 1  # the refused run never loaded the model
    assert invoke("t2v", "x", "--seed", "1", "--overwrite", "--cfg", "2").exit_code == 0
    assert Path("infinistar_x_1.mp4").read_bytes() != before  # new metadata, same frames


def test_unwritable_output_directory(fake, monkeypatch):
    Path("blocker").write_text("a file, not a directory")
    result = invoke("t2v", "x", "--seed", "1", "-o", "blocker/sub/x.mp4")
    assert result.exit_code == 1 and "cannot create output directory" in error_line(result)
    Path("locked").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked" and real_access(path, mode))
    result = invoke("t2v", "x", "--seed", "1", "-o", "locked/x.mp4")  # root ignores modes: simulate
    assert result.exit_code == 1 and error_line(result) == "Error: output directory locked is not writable"
    assert fake.loads == []


@pytest.mark.parametrize("args, message", [
    (["t2v", "   "], "the prompt is empty"),
    (["t2v"], "missing PROMPT"),
    (["t2v", "x", "--seed", "-1"], "--seed"),
    (["t2v", "x", "--seed", "abc"], "--seed"),
    (["t2v", "x", "--seed", str(2**32)], "--seed"),
    (["t2v", "--prompt-file", "missing.txt"], "prompt file missing.txt not found"),
    (["t2v", "x", "--crf", "99"], "--crf"),
    (["t2v", "--bogus", "x"], "No such option"),
])
def test_bad_input_is_one_line(fake, args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in error_line(result) and len(result.stderr.strip().splitlines()) == 1
    assert fake.loads == []


def test_prompt_and_prompt_file_together(fake):
    Path("p.txt").write_text("a\n")
    result = invoke("t2v", "x", "--prompt-file", "p.txt")
    assert result.exit_code == 2 and "not both" in error_line(result)


def test_engine_error_during_run(fake):
    def fail(request):
        raise InfinistarError("seconds=3 is not offered by preset 720p")

    fake.fail_run = fail
    result = invoke("t2v", "x", "--seed", "1")
    assert result.exit_code == 1 and error_line(result) == "Error: seconds=3 is not offered by preset 720p"
    assert list(Path(".").iterdir()) == []


def test_unexpected_bug_short_message_and_verbose_traceback(fake):
    def crash(request):
        raise RuntimeError("boom")

    fake.fail_run = crash
    result = invoke("t2v", "x", "--seed", "1")
    assert result.exit_code == 1
    assert error_line(result) == "Error: unexpected RuntimeError: boom (run with --verbose for the traceback)"
    verbose = invoke("--verbose", "t2v", "x", "--seed", "1")
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr and "RuntimeError: boom" in verbose.stderr


def test_interrupt_leaves_no_file(fake):
    def interrupt(request):
        raise KeyboardInterrupt

    fake.fail_run = interrupt
    result = invoke("t2v", "x", "--seed", "1")
    assert result.exit_code == 130 and error_line(result) == "Error: interrupted"
    assert list(Path(".").iterdir()) == []


def test_disk_errors_are_one_line(fake, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io, "write_result", full)
    result = invoke("t2v", "x", "--seed", "1")
    assert result.exit_code == 1 and error_line(result) == "Error: No space left on device"
