"""`info`, shell completions, the progress renderer and the real entry point in a subprocess."""
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import torch

from cli_fakes import error_line, invoke
from engine.media import video_io
from engine.request import Event
from infinistar_cli.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]


def test_info_shows_generation_settings(fake):
    assert invoke("t2v", "a calm lake", "--seed", "12", "--cfg", "3").exit_code == 0
    result = invoke("info", "infinistar_a-calm-lake_12.mp4")
    assert result.exit_code == 0, result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert rows["prompt"] == "a calm lake" and rows["seed"] == "12" and rows["cfg"] == "3.0"
    assert rows["media"] == "video, h264 16x16, 9 frames, 8 fps, 1.12 s"
    data = json.loads(invoke("info", "--json", "infinistar_a-calm-lake_12.mp4").stdout)
    assert data["metadata"]["seed"] == 12 and data["media"]["frames"] == 9


def test_info_on_foreign_and_broken_files(clean_env):
    video_io.write_png(torch.zeros(4, 4, 3, dtype=torch.uint8), "plain.png")
    Path("plain.png.json").unlink()
    from PIL import Image

    Image.new("RGB", (4, 2)).save("foreign.png")
    result = invoke("info", "foreign.png")
    assert result.exit_code == 0 and "none (not written by infinistar?)" in result.stdout
    Path("broken.mp4").write_bytes(b"\x00" * 64)
    assert "cannot read broken.mp4" in error_line(invoke("info", "broken.mp4"))
    assert "missing.mp4: no such file" in error_line(invoke("info", "missing.mp4"))


def _load_generator():
    spec = importlib.util.spec_from_file_location("completions_generate", ROOT / "completions" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_completions_are_current():
    generator = _load_generator()
    for shell in generator.SHELLS:
        committed = (ROOT / "completions" / f"infinistar.{shell}").read_text(encoding="utf-8")
        assert committed == generator.render(shell), f"run: python completions/generate.py ({shell})"
    assert (ROOT / "completions" / "infinistar.zsh").read_text().startswith("#compdef infinistar\n")


def test_completion_lists_options(clean_env):
    env = {"_INFINISTAR_COMPLETE": "bash_complete", "COMP_WORDS": "infinistar t2v --re", "COMP_CWORD": "2"}
    result = invoke(env=env)
    assert result.exit_code == 0 and result.stdout.split() == ["plain,--res"]


def test_plain_progress_lines():
    stream = io.StringIO()
    reporter = Reporter(stream=stream, rich=False)
    reporter.begin_output("[1/2]")
    for event in [Event("encode_text"), Event("sample", 1, 3, clip=0, scale=0), Event("sample", 2, 3, clip=0, scale=1),
                  Event("decode", 1, 1)]:
        reporter.on_event(event)
    assert stream.getvalue().splitlines() == ["[1/2] encoding prompt...", "[1/2] sampling (3 steps)...",
                                              "[1/2] decoding..."]
    verbose = io.StringIO()
    Reporter(stream=verbose, rich=False, verbose=True).on_event(Event("sample", 2, 3, clip=1, scale=4))
    assert verbose.getvalue() == "sampling (clip 2, scale 5) 2/3\n"
    quiet = io.StringIO()
    Reporter(stream=quiet, quiet=True).on_event(Event("sample", 1, 3))
    assert quiet.getvalue() == ""


def test_write_result_keeps_cli_free_of_tensors():
    # The CLI imports neither torch nor the pipeline: startup stays fast and `--help` works anywhere.
    code = "import sys, infinistar_cli.main; print(sorted({'torch', 'engine.generate.pipeline'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_module_entry_point_help_and_error(tmp_path):
    help_out = subprocess.run([sys.executable, "-m", "infinistar_cli", "t2v", "--help"], capture_output=True,
                              text=True, cwd=ROOT)
    assert help_out.returncode == 0 and "Usage: infinistar t2v" in help_out.stdout
    bad = subprocess.run([sys.executable, "-m", "infinistar_cli", "t2v", "--res", "720p", "--seconds", "10", "x"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("Error: 10 s videos are not available at 720p") and bad.stderr.count("\n") == 1


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    """`infinistar info x.png | head -1`: output into a closed pipe ends quietly with 141 (128 + SIGPIPE)."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
    proc = subprocess.Popen([sys.executable, "-m", "infinistar_cli", "info", str(tmp_path / "p.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the interpreter has even started: every write hits EPIPE
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 141 and err == b""
