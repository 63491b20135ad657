import io
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fake_hub import FakeHub
from huggingface_hub import constants
from official_style import TinyOfficial

from engine.checkpoints import hub
from engine.errors import DiskSpaceError, DownloadError, InfinistarError, ModelNotDownloadedError
from engine.checkpoints.weights import load_safetensors_dir, write_safetensors_dir
from infinistar_cli.models_cmd import download, models

T5 = "text_encoder/flan-t5-xl-official"


def _folder_files(folder: str, seed: int, tmp: Path, **dims) -> dict[str, bytes]:
    torch.manual_seed(seed)
    out = tmp / folder
    write_safetensors_dir(TinyOfficial(**dims).state_dict(), out, max_shard_bytes=6_000)
    return {f"{folder}/{p.name}": p.read_bytes() for p in out.iterdir()}


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("repo")
    files = {"README.md": b"# InfinityStar\n", "config.json": b"{}\n"}
    for seed, variant in enumerate(hub.VARIANTS.values()):
        files.update(_folder_files(variant.transformer_dir, seed, tmp))
    buf = io.BytesIO()
    torch.save({"vae": {"decoder.conv.weight": torch.randn(4, 3)}}, buf)
    files[hub.VAE_FILE] = buf.getvalue()
    files.update(_folder_files(T5, 9, tmp, dim=8, hidden=8))  # its own index, not a copy
    files[f"{T5}/config.json"] = b'{"d_model": 16}\n'
    files[f"{T5}/spiece.model"] = bytes(range(256)) * 4
    return files


@pytest.fixture
def server(repo_files, tmp_path, monkeypatch):
    with FakeHub(hub.REPO_ID, dict(repo_files)) as fake:
        cache = tmp_path / "hf" / "hub"
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("INFINISTAR_CACHE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        # huggingface_hub reads these at import time
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield fake


def go_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def wanted(files, variant: str) -> set[str]:
    prefix = hub.VARIANTS[variant].transformer_dir + "/"
    return {p for p in files if p.startswith((prefix, T5 + "/")) or p == hub.VAE_FILE}


def test_download_then_noop(server, repo_files):
    plan = hub.plan_download("720p")
    assert {f.path for f in plan.files} == wanted(repo_files, "720p")
    assert plan.bytes_to_fetch == sum(len(repo_files[p]) for p in wanted(repo_files, "720p"))
    seen = []
    root = hub.download(plan, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (plan.bytes_total, plan.bytes_total)
    assert sorted(server.file_gets()) == sorted(wanted(repo_files, "720p"))  # README, 480p, ... not fetched
    for rel in wanted(repo_files, "720p"):
        assert (root / rel).read_bytes() == repo_files[rel]
    assert hub.model_status("720p").state == "complete"
    assert hub.model_status("480p").state == "absent"
    assert hub.resolve_model_dir("720p") == root

    before = len(server.requests)
    again = hub.plan_download("720p")
    assert again.bytes_to_fetch == 0 and len(again.present) == len(again.files)
    hub.download(again)
    assert server.file_requests() == [(m, p) for m, p, _ in server.requests[:before] if "/resolve/" in p]

    with torch.device("meta"):
        model = TinyOfficial()
    load_safetensors_dir(model, hub.variant_paths("720p", root)["transformer"])
    torch.manual_seed(0)
    torch.testing.assert_close(model.head.weight, TinyOfficial().head.weight, rtol=0, atol=0)


def test_dropped_connection_resumes_with_range(server, repo_files, monkeypatch):
    # huggingface_hub writes (and counts) 10 MB chunks; small ones let a tiny file resume mid-way
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    shard = "infinitystar_8b_720p_weights/model-00002-of-%05d.safetensors" % len(
        [p for p in repo_files if p.startswith("infinitystar_8b_720p_weights/model-0")]
    )
    server.drop_once.add(shard)
    root = hub.download(hub.plan_download("720p"))
    assert (root / shard).read_bytes() == repo_files[shard]
    ranges = [r for m, p, r in server.requests if m == "GET" and p.endswith(shard)]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")
    assert 0 < int(ranges[1][len("bytes="):].rstrip("-")) <= len(repo_files[shard]) // 2
    assert hub.verify("720p", online=True).ok


def test_failed_download_resumes_on_next_run(server, repo_files):
    server.fail.add(hub.VAE_FILE)
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        hub.download(hub.plan_download("720p"))
    state = hub.model_status("720p")
    assert state.state == "partial" and hub.VAE_FILE in state.missing
    done_first = {p for p in wanted(repo_files, "720p") if p not in state.missing}
    first = len(server.requests)
    server.fail.clear()
    hub.download(hub.plan_download("720p"))
    second = [p for m, p, _ in server.requests[first:] if m == "GET" and "/resolve/" in p]
    assert any(p.endswith(hub.VAE_FILE) for p in second)
    assert not [p for p in second if any(p.endswith("/" + d) for d in done_first)]
    assert hub.model_status("720p").state == "complete"


def test_models_command_states(server, repo_files):
    runner = CliRunner()
    result = runner.invoke(models, [])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:6]}
    assert rows["tiny"][1] == "built-in" and all(rows[name][1] == "absent" for name in hub.VARIANTS)
    result = runner.invoke(download, ["480p", "--yes"])
    assert result.exit_code == 0, result.output
    assert "To fetch:" in result.output and "Done: 480p" in result.output
    root = hub.resolve_model_dir("480p")
    next((root / hub.VARIANTS["480p"].transformer_dir).glob("model-00001-*")).unlink()
    download_720 = runner.invoke(download, ["720p", "--yes"])
    assert download_720.exit_code == 0
    rows = {line.split()[0]: line.split() for line in runner.invoke(models, []).output.splitlines()[2:6]}
    assert rows["720p"][1] == "complete" and rows["480p"][1] == "partial" and rows["interact"][1] == "absent"
    assert (rows["720p"][-2], rows["480p"][-2], rows["interact"][-2]) == ("yes", "no", "no")  # runs offline?
    assert rows["720p"][-1] == str(root) and rows["interact"][-1] == "-"


def test_offline_missing_names_download_command(server, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(ModelNotDownloadedError) as info:
        hub.resolve_model_dir("720p")
    message = str(info.value)
    assert "\n" not in message
    assert "run `infinistar download 720p` (~47.2 GB)" in message
    result = CliRunner().invoke(download, ["720p", "--yes"])
    assert result.exit_code == 1 and result.output.startswith("Error: HF_HUB_OFFLINE")
    assert "Traceback" not in result.output
    assert server.requests == []


def test_offline_after_download(server, monkeypatch):
    root = hub.download(hub.plan_download("interact"))
    go_offline(monkeypatch)
    before = len(server.requests)
    assert hub.resolve_model_dir("interact") == root
    report = hub.verify("interact", online=True)  # offline wins: sizes and headers only
    assert report.ok and not report.hashed and report.files_checked == len(wanted(server.files, "interact"))
    assert len(server.requests) == before


def test_disk_space_refusal(server, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 500, 500))
    result = CliRunner().invoke(download, ["720p", "--yes"])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: Not enough disk space") and "500 B is free" in line and "needs" in line
    assert server.file_gets() == []
    with pytest.raises(DiskSpaceError):
        hub.download(hub.plan_download("720p"))


def test_verify_detects_corruption(server):
    root = hub.download(hub.plan_download("720p"))
    shard = next((root / "infinitystar_8b_720p_weights").glob("model-00001-*"))
    blob = shard.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    report = hub.verify("720p", online=True)
    assert not report.ok and report.hashed
    assert report.problems == (f"infinitystar_8b_720p_weights/{shard.name}: sha256 differs from the hub's",)
    blob.write_bytes(bytes(data[:-10]))
    offline = hub.verify("720p", online=False)
    assert any(p.endswith(f"{shard.name}: size {len(data) - 10}, expected {len(data)}") for p in offline.problems)
    assert any("is truncated" in p for p in offline.problems)
    result = CliRunner().invoke(models, ["--verify", "--offline"])
    assert result.exit_code == 1 and "Error: verification failed" in result.output


def test_remove_keeps_shared_files(server, repo_files):
    hub.download(hub.plan_download("720p"))
    hub.download(hub.plan_download("480p"))
    result = CliRunner().invoke(models, ["rm", "720p", "--yes"])
    assert result.exit_code == 0 and "Removed 720p" in result.output
    assert hub.model_status("720p").state == "absent"
    assert hub.model_status("480p").state == "complete"
    freed = hub.remove("480p")
    assert freed == sum(len(repo_files[p]) for p in wanted(repo_files, "480p"))
    assert not hub.repo_folder(hub.resolve_cache_dir()).exists()


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("INFINISTAR_CACHE", raising=False)
    assert hub.resolve_cache_dir() == tmp_path / "hf"
    assert hub.resolve_cache_dir(config_value=tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.setenv("INFINISTAR_CACHE", str(tmp_path / "env"))
    assert hub.resolve_cache_dir(config_value=tmp_path / "cfg") == tmp_path / "env"
    assert hub.resolve_cache_dir(tmp_path / "flag", config_value=tmp_path / "cfg") == tmp_path / "flag"


def test_plain_official_folder_is_accepted(tmp_path, repo_files):
    for rel, data in repo_files.items():
        if rel in wanted(repo_files, "480p"):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(data)
    assert hub.resolve_model_dir("480p", tmp_path) == tmp_path
    shard = next((tmp_path / T5).glob("model-00002-*"))
    shard.unlink()
    status = hub.model_status("480p", tmp_path)
    assert status.state == "partial" and status.missing == (f"{T5}/{shard.name}",)


def test_unknown_revision_is_a_clear_error(server):
    with pytest.raises(DownloadError, match=r"Could not get the file list of FoundationVision/InfinityStar@v9"):
        hub.plan_download("720p", revision="v9")


def test_token_is_sent(server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub.download(hub.plan_download("720p"))
    assert server.authorization == {"Bearer hf_secret"}


def test_status_needs_one_variant(tmp_path):
    with pytest.raises(InfinistarError, match="not 'all'"):
        hub.model_status("all", tmp_path)
    with pytest.raises(InfinistarError, match="Unknown model variant '1080p'"):
        hub.resolve_model_dir("1080p", tmp_path)


def test_snapshot_fetched_by_another_tool_is_found(server):
    root = hub.download(hub.plan_download("720p"))
    repo = hub.repo_folder(hub.resolve_cache_dir())
    (repo / "refs" / "main").unlink()
    shutil.rmtree(repo / "infinistar")  # no manifest: expected files come from the index files
    assert hub.resolve_model_dir("720p") == root
    next((root / T5).glob("model-00001-*")).unlink()
    with pytest.raises(ModelNotDownloadedError, match=r"720p is incomplete \(1 file missing\)"):
        hub.resolve_model_dir("720p")


def test_cli_takes_cache_dir_from_config_object(tmp_path, monkeypatch):
    import click

    monkeypatch.delenv("INFINISTAR_CACHE", raising=False)

    @click.group()
    @click.pass_context
    def cli(ctx):
        ctx.obj = {"cache_dir": str(tmp_path / "from-config")}

    cli.add_command(models)
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0 and f"cache: {tmp_path / 'from-config'}" in result.output
    monkeypatch.setenv("INFINISTAR_CACHE", str(tmp_path / "from-env"))
    assert f"cache: {tmp_path / 'from-env'}" in CliRunner().invoke(cli, ["models"]).output
    flag = CliRunner().invoke(cli, ["models", "--cache-dir", str(tmp_path / "flag")]).output
    assert f"cache: {tmp_path / 'flag'}" in flag


def _download_cli(*args: str, timeout_s: str = "1") -> subprocess.CompletedProcess:
    """`infinistar download` in a process of its own, with its real HTTP client and clock."""
    env = {**os.environ, "HF_HUB_DOWNLOAD_TIMEOUT": timeout_s, "HF_HUB_ETAG_TIMEOUT": timeout_s,
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "infinistar_cli", "download", *args], capture_output=True,
                          text=True, env=env, timeout=240)


def test_silent_hub_times_out_with_a_clear_message(server):
    server.silent.add("/")  # accepts every connection, never answers
    out = _download_cli("720p", "--yes")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: The hub at {server.url} did not answer within 1 s (3 tries); check the network or "
        "HF_ENDPOINT, or allow more time with HF_HUB_DOWNLOAD_TIMEOUT=<seconds>.")
    assert len(out.stderr.strip().splitlines()) == 1
    assert len([r for r in server.requests if r[1].startswith("/api/")]) == 3  # asked again, twice


def test_hub_going_silent_mid_download_times_out(server, repo_files):
    server.silent.add(f"/{hub.REPO_ID}/resolve/")  # the file list comes, the files never do
    out = _download_cli("720p", "--yes")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == ("Error: Download interrupted (the hub sent nothing for 3 s); run the same command "
                    "again to resume."), out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # huggingface_hub's retry chatter is not shown
