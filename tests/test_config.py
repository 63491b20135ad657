"""Config file + environment: precedence flag > env > file > default, and one-line errors."""
from pathlib import Path

import pytest

from cli_fakes import error_line, invoke
from infinistar_cli.config import ConfigError, build_default_map, default_config_path
from infinistar_cli.main import cli


def test_default_map_layout():
    raw = {"device": "cpu", "cfg": 3, "tau-image": 0.5, "crf": 20, "t2i": {"cfg": 7.5}, "seed": [1, 2]}
    result = build_default_map(raw, cli, "test")
    assert result["device"] == "cpu"
    assert result["t2v"] == {"cfg": 3, "tau_image": 0.5, "crf": 20, "seeds": [1, 2]}
    assert result["t2i"] == {"cfg": 7.5, "tau_image": 0.5, "seeds": [1, 2]}  # no crf for images
    assert build_default_map({"json": True}, cli, "test")["info"] == {"json_output": True}


@pytest.mark.parametrize("raw, message", [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"crf": "high"}, "key 'crf' must be an integer"),
    ({"crf": 80}, "key 'crf': 80 is not in the range"),
    ({"cfg": True}, "key 'cfg' must be a number"),
    ({"overwrite": "yes"}, "key 'overwrite' must be true or false"),
    ({"device": "tpu"}, "key 'device'"),
    ({"seed": [1, "x"]}, "key 'seed' must be an integer or a list of them"),
    ({"t2v": {"colour": 1}}, "unknown key 'colour' in [t2v]"),
    ({"t2v": 3}, "'t2v' must be a table"),
    ({"prompt-file": "x.txt"}, "unknown key 'prompt-file'"),
])
def test_bad_keys_are_named(raw, message):
    with pytest.raises(ConfigError) as caught:
        build_default_map(raw, cli, "config f.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_flag_env_file_default(fake, monkeypatch):
    config = write_config(Path("c.toml"), 'cfg = 2.0\ndevice = "cpu"\n[t2v]\ntau-video = 0.2\n')
    assert invoke("--config", str(config), "t2v", "x", "--seed", "1").exit_code == 0
    monkeypatch.setenv("INFINISTAR_CFG", "3")
    assert invoke("--config", str(config), "t2v", "x", "--seed", "2").exit_code == 0
    assert invoke("--config", str(config), "--device", "mps", "t2v", "x", "--seed", "3", "--cfg", "4").exit_code == 0
    monkeypatch.delenv("INFINISTAR_CFG")
    assert invoke("t2v", "x", "--seed", "4").exit_code == 0  # no file: defaults
    assert [r.cfg for r in fake.requests] == [2.0, 3.0, 4.0, None]
    assert [r.tau_video for r in fake.requests] == [0.2, 0.2, 0.2, None]
    assert [device for _, device in fake.loads] == ["cpu", "cpu", "mps", "auto"]


def test_env_and_user_config_locations(fake, monkeypatch):
    user_file = write_config(default_config_path(), 'res = "480p"\n')
    assert str(user_file).startswith(str(Path.cwd().parent / "xdg"))
    assert invoke("t2v", "x", "--seed", "1").exit_code == 0
    other = write_config(Path("other.toml"), "quiet = true\n")
    monkeypatch.setenv("INFINISTAR_CONFIG", str(other))
    result = invoke("t2v", "x", "--seed", "2")
    assert result.exit_code == 0 and result.stderr == ""  # quiet from $INFINISTAR_CONFIG, user file not read
    monkeypatch.setenv("INFINISTAR_DEVICE", "cuda")
    monkeypatch.setenv("INFINISTAR_SEED", "5 6")
    assert invoke("t2v", "x").exit_code == 0
    assert [m for m, _ in fake.loads] == ["480p", "720p", "720p"] and fake.loads[-1][1] == "cuda"
    assert [r.seed for r in fake.requests[2:]] == [5, 6]


def test_flag_beats_configured_res(fake):
    config = write_config(Path("c.toml"), 'res = "480p"\n')
    assert invoke("--config", str(config), "t2v", "x", "--seed", "1", "--model", "tiny").exit_code == 0
    assert fake.loads[0][0] == "tiny"


def test_config_errors_are_one_line(fake):
    assert "config file nope.toml not found" in error_line(invoke("--config", "nope.toml", "t2v", "x"))
    write_config(Path("broken.toml"), "cfg = = 1\n")
    assert "is not valid TOML" in error_line(invoke("--config", "broken.toml", "t2v", "x"))
    write_config(Path("typo.toml"), "cgf = 1\n")
    result = invoke("--config", "typo.toml", "t2v", "x")
    assert result.exit_code == 1 and error_line(result) == "Error: config typo.toml: unknown key 'cgf'"
    assert fake.loads == []
