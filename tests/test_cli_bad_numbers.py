"""Bad numbers and endless prompt files are refused where they are read, naming their source,
before any model is loaded (issue 13, section 3)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from cli_fakes import error_line, invoke
from engine.errors import RequestError
from engine.presets import SamplingConfig
from engine.request import GenerationRequest


def _nothing_happened(fake, work: Path) -> None:
    assert fake.loads == []
    assert sorted(p.name for p in work.iterdir() if p.name not in ("c.toml", "shots.jsonl", "long.txt")) == []


@pytest.mark.parametrize("args, message", [
    (["--cfg", "nan"], "Invalid value for '--cfg': nan is not a number from 0 to 1000"),
    (["--cfg", "inf"], "Invalid value for '--cfg': inf is not a number from 0 to 1000"),
    (["--cfg", "-1"], "Invalid value for '--cfg': -1.0 is not a number from 0 to 1000"),
    (["--tau-image", "nan"], "Invalid value for '--tau-image': nan is not a number from 0.001 to 10"),
    (["--tau-image", "1e-30"], "Invalid value for '--tau-image': 1e-30 is not a number from 0.001 to 10"),
    (["--tau-video", "-inf"], "Invalid value for '--tau-video': -inf is not a number from 0.001 to 10"),
])
def test_flags(fake, args, message):
    result = invoke("t2v", "a cat", "--model", "tiny", *args)
    assert result.exit_code == 2
    assert message in error_line(result)
    _nothing_happened(fake, Path.cwd())


@pytest.mark.parametrize("variable, value, message", [
    ("INFINISTAR_CFG", "nan", "INFINISTAR_CFG: nan is not a number from 0 to 1000"),
    ("INFINISTAR_CFG", "abc", "INFINISTAR_CFG: 'abc' is not a valid float"),
    ("INFINISTAR_TAU_VIDEO", "0", "INFINISTAR_TAU_VIDEO: 0.0 is not a number from 0.001 to 10"),
    ("INFINISTAR_SEED", "1 x", "INFINISTAR_SEED: 'x' is not a valid integer"),
    ("INFINISTAR_CRF", "99", "INFINISTAR_CRF: 99 is not in the range"),
])
def test_environment_variables_are_named(fake, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    result = invoke("t2v", "a cat", "--model", "tiny")
    assert result.exit_code == 2
    line = error_line(result)
    assert message in line and "--" not in line.split("(see")[0]
    _nothing_happened(fake, Path.cwd())


def test_config_variable_is_named(fake, monkeypatch):
    monkeypatch.setenv("INFINISTAR_CONFIG", "/nonexistent/infinistar.toml")
    result = invoke("t2v", "a cat", "--model", "tiny")
    assert result.exit_code == 1
    assert error_line(result) == "Error: INFINISTAR_CONFIG: config file /nonexistent/infinistar.toml not found"


@pytest.mark.parametrize("text, message", [
    ("cfg = nan\n", "key 'cfg': nan is not a number from 0 to 1000"),
    ("[t2v]\ntau_video = inf\n", "key 't2v.tau_video': inf is not a number from 0.001 to 10"),
    ("tau_image = 50\n", "key 'tau_image': 50.0 is not a number from 0.001 to 10"),
])
def test_config_file(fake, text, message):
    Path("c.toml").write_text(text)
    result = invoke("--config", "c.toml", "t2v", "a cat", "--model", "tiny")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: config c.toml: {message}"
    _nothing_happened(fake, Path.cwd())


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a", "cfg": NaN}', "shots.jsonl line 2: cfg: nan is not a number from 0 to 1000"),
    ('{"prompt": "a", "tau_image": Infinity}', "shots.jsonl line 2: tau_image: inf is not a number from 0.001 to 10"),
    ('{"prompt": "a", "tau_video": 1e-9}', "shots.jsonl line 2: tau_video: 1e-09 is not a number from 0.001 to 10"),
])
def test_jsonl_lines(fake, line, message):
    Path("shots.jsonl").write_text('{"prompt": "fine", "cfg": 3}\n' + line + "\n")
    result = invoke("t2v", "--prompt-file", "shots.jsonl", "--model", "tiny")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {message}"
    _nothing_happened(fake, Path.cwd())


def test_engine_refuses_what_the_cli_would():
    with pytest.raises(RequestError, match="cfg: nan is not a number"):
        GenerationRequest(mode="t2v", prompt="x", seed=1, cfg=math.nan)
    with pytest.raises(RequestError, match="tau_video: inf"):
        GenerationRequest(mode="t2v", prompt="x", seed=1, tau_video=math.inf)
    with pytest.raises(RequestError, match="sampling cfg: nan"):
        SamplingConfig(cfg_scale=math.nan)
    assert GenerationRequest(mode="t2v", prompt="x", seed=1, cfg=34, tau_image=1.0, tau_video=0.4).cfg == 34


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("args, what", [
    (["--prompt-file", "/dev/zero"], "prompt file /dev/zero"),
    (["a cat", "--story", "/dev/zero"], "story file /dev/zero"),
])
def test_endless_line_is_refused_quickly(fake, args, what):
    result = invoke("t2v", *args, "--model", "tiny")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {what} line 1 is longer than 64 KiB; is it a text file?"
    _nothing_happened(fake, Path.cwd())


def test_endless_stdin_and_long_line(fake):
    result = invoke("t2v", "--prompt-file", "-", "--model", "tiny", input="\0" * (200 * 1024))
    assert error_line(result) == "Error: prompt file stdin line 1 is longer than 64 KiB; is it a text file?"
    Path("long.txt").write_bytes(b"a fine prompt\n" + b"x" * (64 * 1024 + 1) + b"\n")
    result = invoke("t2v", "--prompt-file", "long.txt", "--model", "tiny")
    assert error_line(result) == "Error: prompt file long.txt line 2 is longer than 64 KiB; is it a text file?"
    Path("long.txt").write_bytes(b"caf\xe9 au lait\n")
    result = invoke("t2v", "--prompt-file", "long.txt", "--model", "tiny")
    assert error_line(result) == "Error: prompt file long.txt line 1 is not UTF-8 text"
    _nothing_happened(fake, Path.cwd())


def test_prompt_of_exactly_the_limit_is_read(fake):
    prompt = "x" * (64 * 1024 - 1)
    Path("long.txt").write_text("\ufeff" + "a cat\n" + prompt + "\n", encoding="utf-8")
    result = invoke("t2i", "--prompt-file", "long.txt", "--model", "tiny", "--seed", "1", "-o", "{index}.png")
    assert result.exit_code == 0, result.stderr
    assert [r.prompt for r in fake.requests] == ["a cat", prompt]
