"""The HTTP API in-process with a fake engine: jobs, cancel, queue limit, restart, keep-alive, events."""
from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from engine.media.video_io import read_metadata  # noqa: E402
from infinistar_server.store import JobStore  # noqa: E402
from server_fakes import Servers, SteppingEngine, data_files, finished, wait_until  # noqa: E402


@pytest.fixture
def fake(monkeypatch):
    import engine

    fake = SteppingEngine()
    monkeypatch.setattr(engine, "load_pipeline", fake.load)
    yield fake
    fake.release.set()


@pytest.fixture
def servers(tmp_path, fake):
    servers = Servers(tmp_path / "data")
    yield servers
    fake.release.set()
    servers.close()


def test_a_video_job_runs_once_and_serves_its_file_and_metadata(servers, fake, tmp_path):
    client = servers.start()
    job = client.post("/v1/videos", json={"prompt": "a red ball", "seed": 5, "cfg": 2.5}).json()
    assert job["object"] == "video" and job["status"] == "queued" and job["id"].startswith("video_")
    done = finished(client, job["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    assert [r.seed for r in fake.requests] == [5] and fake.requests[0].cfg == 2.5
    content = client.get(done["content_url"])
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    path = tmp_path / "data" / "outputs" / f"{job['id']}.mp4"
    assert content.content == path.read_bytes()
    # The job record carries the CLI's sidecar metadata, which is also in the file.
    assert done["metadata"]["seed"] == 5 and read_metadata(path)["prompt"] == "a red ball"
    listed = client.get("/v1/videos").json()
    assert [j["id"] for j in listed["data"]] == [job["id"]] and listed["has_more"] is False


def test_cancel_of_a_running_job_stops_at_the_next_step_and_leaves_no_file(servers, fake, tmp_path):
    fake.steps, fake.pause_at = 10, 3
    client = servers.start()
    job_id = client.post("/v1/videos", json={"prompt": "a red ball", "seed": 1}).json()["id"]
    assert fake.reached.wait(30)
    answer = {}
    deleting = threading.Thread(target=lambda: answer.update(client.delete(f"/v1/videos/{job_id}").json()))
    deleting.start()
    wait_until(lambda: client.app.state.worker.stop_reason == "cancel", "the cancel request")
    fake.release.set()
    deleting.join(30)
    assert answer["status"] == "cancelled"
    assert fake.steps_run == 3  # the step in flight finished; no further step ran
    assert data_files(tmp_path) == []
    assert client.get(f"/v1/videos/{job_id}/content").status_code == 404


def test_a_full_queue_answers_429_and_loses_nothing(servers, fake):
    fake.pause_at = 1
    client = servers.start(max_queue=2)
    first = client.post("/v1/videos", json={"prompt": "one", "seed": 1}).json()["id"]
    assert fake.reached.wait(30)  # running, so it no longer takes a queue place
    queued = [client.post("/v1/videos", json={"prompt": f"p{i}", "seed": i}).json()["id"] for i in (2, 3)]
    refused = client.post("/v1/videos", json={"prompt": "four", "seed": 4})
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["retry-after"]
    fake.release.set()
    assert [finished(client, j)["status"] for j in [first, *queued]] == ["completed"] * 3
    assert sorted(r.seed for r in fake.requests) == [1, 2, 3]
    assert len(client.get("/v1/videos").json()["data"]) == 3


def test_restart_requeues_queued_jobs_fails_the_interrupted_one_and_drops_partial_files(servers, fake, tmp_path):
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    store = JobStore(data / "jobs.sqlite3")
    params = {"mode": "t2v", "model": "tiny", "prompt": "p", "seed": 1, "segments": [], "crf": 18}
    store.add("video_" + "a" * 32, "video", params)
    store.update("video_" + "a" * 32, status="in_progress", progress=40)
    store.add("video_" + "b" * 32, "video", {**params, "seed": 2})
    store.close()
    partial = data / "outputs" / f".video_{'a' * 32}.mp4.x1y2.part"
    partial.write_bytes(b"half an mp4")
    client = servers.start()
    interrupted = client.get(f"/v1/videos/video_{'a' * 32}").json()
    assert interrupted["status"] == "failed" and interrupted["error"]["code"] == "interrupted"
    assert "stopped while this job was running" in interrupted["error"]["message"]
    assert finished(client, "video_" + "b" * 32)["status"] == "completed"
    assert not partial.exists() and [r.seed for r in fake.requests] == [2]


def test_a_job_cut_off_by_a_shutdown_is_queued_again_and_runs_after_the_restart(servers, fake, tmp_path):
    fake.pause_at = 2
    client = servers.start()
    job_id = client.post("/v1/videos", json={"prompt": "x", "seed": 4}).json()["id"]
    assert fake.reached.wait(30)
    stopping = threading.Thread(target=servers.stop, args=(client,))
    stopping.start()  # the worker is asked to stop at its next step...
    wait_until(lambda: client.app.state.worker.stop_reason == "shutdown", "the shutdown request")
    fake.release.set()  # ...which comes once the paused step ends
    stopping.join(30)
    assert data_files(tmp_path) == []
    fake.pause_at = None
    again = servers.start()
    assert finished(again, job_id)["status"] == "completed"
    assert [r.seed for r in fake.requests] == [4, 4]


def test_keep_alive_zero_releases_the_model_after_each_job(servers, fake):
    client = servers.start(keep_alive=0)
    for seed in (1, 2):
        finished(client, client.post("/v1/videos", json={"prompt": "x", "seed": seed}).json()["id"])
        wait_until(lambda: client.get("/health").json()["model_loaded"] is None, "the model release")
    assert fake.loads == ["tiny", "tiny"]


def test_keep_alive_keeps_one_load_for_many_jobs(servers, fake):
    client = servers.start(keep_alive=None)
    for seed in (1, 2, 3):
        finished(client, client.post("/v1/videos", json={"prompt": "x", "seed": seed}).json()["id"])
    assert fake.loads == ["tiny"] and client.get("/health").json()["model_loaded"] == "tiny"


def test_progress_arrives_as_server_sent_events(servers, fake):
    client = servers.start()
    job_id = client.post("/v1/videos", json={"prompt": "x", "seed": 1}).json()["id"]
    events = []
    with client.stream("GET", f"/v1/videos/{job_id}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[-1][0] == "done" and events[-1][1]["status"] == "completed"
    progress = [e["progress"] for _, e in events]
    assert progress == sorted(progress) and progress[-1] == 100


def test_images_endpoint_answers_with_the_png(servers, fake):
    import base64

    client = servers.start()
    answer = client.post("/v1/images/generations", json={"prompt": "a cube", "seed": 9}).json()
    png = base64.b64decode(answer["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG") and answer["seed"] == 9 and fake.requests[0].mode == "t2i"
    url = client.post("/v1/images/generations", json={"prompt": "a cube", "response_format": "url"}).json()
    assert client.get(url["data"][0]["url"]).headers["content-type"] == "image/png"


def test_deleting_a_finished_job_removes_its_files(servers, fake, tmp_path):
    client = servers.start()
    job_id = client.post("/v1/videos", json={"prompt": "x", "seed": 1}).json()["id"]
    finished(client, job_id)
    assert data_files(tmp_path)
    assert client.delete(f"/v1/videos/{job_id}").json() == {"id": job_id, "object": "video.deleted", "deleted": True}
    assert data_files(tmp_path) == [] and client.get(f"/v1/videos/{job_id}").status_code == 404


def test_models_health_page_and_docs(servers):
    client = servers.start()
    models = client.get("/v1/models").json()["data"]
    assert {"720p", "480p", "tiny"} <= {m["id"] for m in models}
    assert [m["id"] for m in models if m["default"]] == ["tiny"]
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text
    assert "fetch(" in client.get("/app.js").text
    schema = client.get("/openapi.json").json()
    assert "/v1/videos" in schema["paths"] and "/v1/videos/{video_id}/events" in schema["paths"]
    body = schema["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert "seconds" in body["application/json"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200
