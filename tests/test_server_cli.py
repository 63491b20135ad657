"""`infinistar serve` and `infinistar jobs` refuse bad settings with one line, before anything starts."""
from __future__ import annotations

import socket

import click
import pytest

from cli_fakes import invoke
from infinistar_cli.serve_cmd import is_loopback, parse_keep_alive


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("30s", 30), ("1h", 3600), ("90", 90), ("0", 0),
                                           ("-1", None), ("250ms", 0.25)])
def test_keep_alive_durations(text, seconds):
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "-2", "m5", "1.2.3s"])
def test_bad_keep_alive(text):
    with pytest.raises(click.BadParameter):
        parse_keep_alive(text)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False),
                                           ("192.0.2.1", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_a_data_dir_in_use_is_refused(tmp_path):
    pytest.importorskip("fastapi")
    from infinistar_server.app import lock_data_dir

    with lock_data_dir(tmp_path):
        result = invoke("serve", "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and "another infinistar serve uses" in result.stderr


def test_binding_beyond_loopback_needs_a_token_file(tmp_path):
    result = invoke("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "listening on 0.0.0.0 needs --token-file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", [("", "must hold one token"), ("two words\n", "must hold one token")])
def test_a_token_file_holds_one_token(tmp_path, content, message):
    token = tmp_path / "token"
    token.write_text(content)
    result = invoke("serve", "--token-file", str(token), "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and message in result.stderr


def test_a_missing_token_file_is_named(tmp_path):
    result = invoke("serve", "--token-file", str(tmp_path / "nope"), "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_unknown_model_and_bad_keep_alive_fail_before_starting(tmp_path):
    assert "unknown preset 'sora'" in invoke("serve", "--model", "sora", "--data-dir", str(tmp_path)).stderr
    result = invoke("serve", "--keep-alive", "soon", "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "--keep-alive" in result.stderr


def test_a_port_in_use_is_one_line(tmp_path):
    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_jobs_without_a_server_says_so():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("jobs", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: no server at http://127.0.0.1:{port}") and "infinistar serve" in result.stderr
