"""The real `infinistar serve` process with the tiny model, driven by the official openai client and
plain HTTP: the same frames as the CLI, cancel, SIGKILL and restart, a burst of 50 submissions."""
from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from engine.media.video_io import write_mp4  # noqa: E402
from infinistar_cli.main import cli  # noqa: E402
from server_process import ServerProcess  # noqa: E402

# openai marks its video API deprecated; these tests start real server processes (slow).
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow]
MAX_QUEUE = 3


def decode(path_or_bytes) -> np.ndarray:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(source) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)


def same_video(a: np.ndarray, b: np.ndarray) -> bool:
    # Equal frames, up to libx264's run-to-run noise (see test_e2e_tiny).
    return a.shape == b.shape and np.abs(a - b).mean() < 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("serve") / "data", "--keep-alive", "2s",
                            "--max-queue", str(MAX_QUEUE)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("inputs")
    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :64], image[:, 64:] = (200, 30, 30), (30, 30, 200)
    Image.fromarray(image).save(folder / "in.png")
    ramp = np.linspace(0, 255, 17).astype(np.uint8)
    frames = np.stack([np.full((48, 64, 3), (v, 80, 255 - v), np.uint8) for v in ramp])
    write_mp4(frames, folder / "in.mp4", 16)
    return {"image": folder / "in.png", "video": folder / "in.mp4", "folder": folder}



def run_cli(*args: str) -> None:
    result = CliRunner().invoke(cli, ["--device", "cpu", "-q", *args, "--model", "tiny"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_openai_client_jobs_give_the_clis_frames(server, inputs, tmp_path, one_thread):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    jobs = {
        "t2v": client.videos.create(prompt="a red ball", model="tiny", extra_body={"seed": 7}),
        "i2v": client.videos.create(prompt="a boat", model="tiny", input_reference=inputs["image"].open("rb"),
                                    extra_body={"seed": 2}),
        "extend": client.videos.create(prompt="more", model="tiny", input_reference=inputs["video"].open("rb"),
                                       extra_body={"seed": 4}),
    }
    assert [job.status for job in jobs.values()] == ["queued"] * 3
    image = client.images.generate(model="tiny", prompt="a blue cube", extra_body={"seed": 3})
    served = {mode: client.videos.poll(job.id, poll_interval_ms=100) for mode, job in jobs.items()}
    assert {mode: video.status for mode, video in served.items()} == dict.fromkeys(jobs, "completed")
    assert served["extend"].model_extra["mode"] == "extend" and served["i2v"].model_extra["mode"] == "i2v"
    assert served["t2v"].size == "64x48" and served["t2v"].seconds == "1"

    run_cli("t2v", "a red ball", "--seed", "7", "-o", str(tmp_path / "t2v.mp4"))
    run_cli("i2v", str(inputs["image"]), "a boat", "--seed", "2", "-o", str(tmp_path / "i2v.mp4"))
    run_cli("extend", str(inputs["video"]), "more", "--seed", "4", "-o", str(tmp_path / "extend.mp4"))
    run_cli("t2i", "a blue cube", "--seed", "3", "-o", str(tmp_path / "t2i.png"))
    for mode, video in served.items():
        content = client.videos.download_content(video.id).content
        assert same_video(decode(content), decode(tmp_path / f"{mode}.mp4")), mode
    png = Image.open(io.BytesIO(base64.b64decode(image.data[0].b64_json)))
    assert np.array_equal(np.asarray(png), np.asarray(Image.open(tmp_path / "t2i.png")))
    other = client.videos.poll(client.videos.create(prompt="a red ball", model="tiny", extra_body={"seed": 8}).id,
                               poll_interval_ms=100)
    other_frames = decode(client.videos.download_content(other.id).content)
    assert np.abs(other_frames - decode(tmp_path / "t2v.mp4")).mean() > 2.0  # another seed, another video


def test_cancel_of_a_running_job_leaves_no_file(server):
    http = httpx.Client(base_url=server.url, timeout=60)
    job = http.post("/v1/videos", json={"prompt": "a red ball", "seed": 1, "then": ["a blue ball", "a cat"]}).json()
    server.wait_for_stage(http, job["id"], "sample")
    cancelled = http.delete(f"/v1/videos/{job['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["content_url"] is None
    assert not list(server.data_dir.glob(f"outputs/*{job['id']}*"))
    assert not list(server.data_dir.glob("outputs/.*.part"))
    assert http.get(f"/v1/videos/{job['id']}/content").status_code == 404
    assert http.get("/health").json()["running"] is None


def test_jobs_command_lists_and_cancels(server):
    http = httpx.Client(base_url=server.url, timeout=60)
    job = http.post("/v1/videos", json={"prompt": "a long one", "seed": 5, "then": ["on", "and on"]}).json()
    listed = CliRunner().invoke(cli, ["jobs", "--url", server.url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert job["id"] in [json.loads(line)["id"] for line in listed.output.splitlines()]
    cancelled = CliRunner().invoke(cli, ["jobs", "--url", server.url, "--cancel", job["id"]])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    unknown = CliRunner().invoke(cli, ["jobs", "--url", server.url, "--cancel", "video_nope"])
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: the server answered 400")


def test_fifty_submissions_from_ten_clients_are_accepted_or_429_and_each_runs_once(server):
    def client_burst(number: int) -> list[tuple[int, str]]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            answers = [http.post("/v1/videos", json={"prompt": f"load {number}-{k}", "seed": number * 10 + k})
                       for k in range(5)]
        return [(a.status_code, a.json().get("id") or a.json()["error"]["type"]) for a in answers]

    with ThreadPoolExecutor(10) as pool:
        answers = [a for burst in pool.map(client_burst, range(10)) for a in burst]
    assert len(answers) == 50 and {status for status, _ in answers} <= {200, 429}
    accepted = [ident for status, ident in answers if status == 200]
    refused = [ident for status, ident in answers if status == 429]
    assert len(set(accepted)) == len(accepted) and 1 <= len(accepted) <= MAX_QUEUE + 1
    assert set(refused) == {"rate_limit_error"}
    http = httpx.Client(base_url=server.url, timeout=60)
    finished = [server.wait_for(http, ident) for ident in accepted]
    assert {job["status"] for job in finished} == {"completed"}
    listed = [j for j in http.get("/v1/videos?limit=100").json()["data"] if j["prompt"].startswith("load ")]
    assert sorted(j["id"] for j in listed) == sorted(accepted)  # nothing lost, nothing twice
    outputs = [p.name for p in server.data_dir.glob("outputs/*.mp4")]
    assert all(outputs.count(f"{ident}.mp4") == 1 for ident in accepted)


def test_sigkill_while_running_then_restart(tmp_path):
    first = ServerProcess(tmp_path / "data").start()
    http = httpx.Client(base_url=first.url, timeout=60)
    try:
        running = http.post("/v1/videos", json={"prompt": "long", "seed": 1, "then": ["on", "and on"]}).json()["id"]
        queued = [http.post("/v1/videos", json={"prompt": f"next {k}", "seed": k}).json()["id"] for k in (2, 3)]
        first.wait_for_stage(http, running, "sample")
    finally:
        first.kill()
    second = ServerProcess(tmp_path / "data", port=first.port).start()
    try:
        interrupted = http.get(f"/v1/videos/{running}").json()
        assert interrupted["status"] == "failed" and interrupted["error"]["code"] == "interrupted"
        assert [second.wait_for(http, ident)["status"] for ident in queued] == ["completed", "completed"]
        names = sorted(p.name for p in (tmp_path / "data" / "outputs").iterdir())
        assert names == sorted([f"{q}.mp4" for q in queued] + [f"{q}.mp4.json" for q in queued])
        listed = {j["id"]: j["status"] for j in http.get("/v1/videos").json()["data"]}
        assert listed == {running: "failed", queued[0]: "completed", queued[1]: "completed"}
    finally:
        second.stop()
