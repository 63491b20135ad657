"""What a person sees in a terminal (a pseudo-terminal read through the pyte emulator), and what a
script sees in plain mode. The fake engine (tests/fake_cli.py) makes these fast; one run uses the
real tiny model."""
import io
import os
import re
import sys
from pathlib import Path

import pytest

from cli_fakes import invoke
from infinistar_cli.progress import wants_live

pytest.importorskip("pyte")
pty = pytest.importorskip("pty")
from terminal_screen import SPINNER, run_on_terminal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAKE_CLI = [sys.executable, str(ROOT / "tests" / "fake_cli.py")]
STAGE_WORDS = ("loading model", "encoding prompt", "sampling", "decoding", "writing")
SECONDS = re.compile(r"\d+\.\d s")
SUMMARY = re.compile(r"(?P<mark>✓ )?(?P<label>\[\d+/\d+\] )?wrote (?P<path>\S+)  (?P<frames>\d+) frames (?P<h>\d+)×(?P<w>\d+), "
                     r"seed (?P<seed>\d+), \d+\.\d s total \((?P<parts>[^)]*)\)$")


def terminal_env(**extra: str) -> dict:
    """The test's environment as a person's terminal would have it: no CI, colours allowed."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    return {**env, "TERM": "xterm-256color", "PYTHONPATH": str(ROOT), **extra}


def assert_clean(screen: list[str]) -> None:
    """No trace of the live region: no spinner frame, no stage line, no bar."""
    text = "\n".join(screen)
    assert not SPINNER.search(text), text
    assert not any(word in line for line in screen for word in STAGE_WORDS if not line.startswith("model ")), text
    assert "━" not in text and "ETA" not in text, text


def test_single_run_leaves_model_line_summary_and_path(clean_env):
    run = run_on_terminal([*FAKE_CLI, "t2v", "a calm lake", "--seed", "5"], env=terminal_env(FAKE_EVENT_DELAY="0.2"),
                          cwd=str(clean_env), cols=200)
    assert run.exit_code == 0, run.screen
    assert_clean(run.screen)
    model, summary, path = run.screen
    assert model == "model 720p (/models/720p) on cpu, float32, offload none, weights bf16"
    match = SUMMARY.match(summary)
    assert match and match["mark"] and match["path"] == "infinistar_a-calm-lake_5.mp4", summary
    assert (match["frames"], match["h"], match["w"], match["seed"]) == ("9", "16", "16", "5")
    assert [part.split()[0] for part in match["parts"].split(", ")] == ["load", "sample", "write"]
    assert path == "infinistar_a-calm-lake_5.mp4"  # stdout, not drawn over
    # While it ran, the stages replaced one another on one line under the prompt's title.
    assert "seed 5: a calm lake" in run.seen
    assert any(SPINNER.match(line) and "sampling (clip 1, scale 2)" in line for line in run.seen)


def test_batch_shows_overall_bar_then_one_line_per_output(clean_env):
    Path("prompts.txt").write_text("".join(f"shot number {k}\n" for k in range(1, 6)))
    run = run_on_terminal([*FAKE_CLI, "t2v", "--prompt-file", "prompts.txt", "--seed", "7"],
                          env=terminal_env(FAKE_EVENT_DELAY="0.1"), cwd=str(clean_env), cols=200)
    assert run.exit_code == 0, run.screen
    assert_clean(run.screen)
    assert run.screen[0].startswith("model 720p ")
    outputs = run.screen[1:-1]
    assert len(outputs) == 10
    for k in range(1, 6):
        summary, path = outputs[2 * k - 2: 2 * k]
        match = SUMMARY.match(summary)
        assert match and match["label"] == f"[{k}/5] " and match["path"] == path == f"infinistar_shot-number-{k}_7.mp4"
        assert ("load" in match["parts"]) == (k == 1)  # the model loads once
    assert re.fullmatch(r"done: 5 written, 0 skipped in \d+\.\d s", run.screen[-1])
    bars = [line for line in run.seen if re.match(r"\[\d/5\] ━", line)]
    assert any(re.search(r"\[3/5\] .* 2/5 done  \d:\d\d:\d\d elapsed  ETA \d:\d\d:\d\d$", line) for line in bars), bars


PLAIN_TRANSCRIPT = [
    "model 720p (/models/720p) on cpu, float32, offload none, weights bf16",
    "seed 5: a calm lake",
    "encoding prompt...",
    "sampling (2 steps)...",
    "decoding...",
    "writing...",
    "wrote infinistar_a-calm-lake_5.mp4  9 frames 16×16, seed 5, X s total (load X s, sample X s, write X s)",
]


def plain(lines: list[str]) -> list[str]:
    return [SECONDS.sub("X s", line) for line in lines]


def test_plain_mode_is_stable_line_by_line(fake):
    """Scripts and logs (stderr not a terminal) get one line per message and stage, unchanged."""
    result = invoke("t2v", "a calm lake", "--seed", "5")
    assert result.exit_code == 0, result.stderr
    assert plain(result.stderr.splitlines()) == PLAIN_TRANSCRIPT
    assert result.stdout == "infinistar_a-calm-lake_5.mp4\n"
    quiet = invoke("--quiet", "t2v", "a calm lake", "--seed", "6")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == "infinistar_a-calm-lake_6.mp4\n"


def test_plain_mode_on_a_terminal_in_ci(clean_env):
    """On a terminal, CI=1 keeps the plain lines: the same transcript, stdout's path after it."""
    run = run_on_terminal([*FAKE_CLI, "t2v", "a calm lake", "--seed", "5"], env=terminal_env(CI="1"),
                          cwd=str(clean_env), cols=200)
    assert run.exit_code == 0, run.screen
    assert plain(run.screen) == PLAIN_TRANSCRIPT + ["infinistar_a-calm-lake_5.mp4"]


@pytest.mark.parametrize("env, live", [({}, True), ({"CI": "true"}, False), ({"NO_COLOR": ""}, False),
                                       ({"TERM": "dumb"}, False), ({"TERM": "xterm"}, True)])
def test_live_display_only_for_a_person_at_a_terminal(env, live):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert wants_live(Terminal(), env) is live
    assert wants_live(io.StringIO(), env) is False


def test_real_tiny_model_on_a_terminal(clean_env):
    """The shipped tiny model, end to end: the screen a person is left with after one run."""
    run = run_on_terminal([sys.executable, "-m", "infinistar_cli", "--device", "cpu", "t2v", "a red square moving right",
                           "--model", "tiny", "--seed", "5"], env=terminal_env(), cwd=str(clean_env), cols=200)
    assert run.exit_code == 0, run.screen
    assert_clean(run.screen)
    model, summary, path = run.screen
    assert model.startswith("model tiny (built in, ") and model.endswith(" on cpu, float32, offload none, weights bf16")
    match = SUMMARY.match(summary)
    assert match and (match["frames"], match["h"], match["w"]) == ("17", "48", "64"), summary
    assert {"load", "sample", "decode", "write"} <= {part.split()[0] for part in match["parts"].split(", ")}
    assert path == "infinistar_a-red-square-moving-right_5.mp4" and Path(path).stat().st_size > 0
