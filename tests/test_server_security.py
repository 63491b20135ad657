"""Bad requests get a 4xx JSON error naming the field and leave no file and no job; token and paths."""
from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from server_fakes import Servers, SteppingEngine, data_files, finished  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture
def servers(tmp_path, monkeypatch):
    import engine

    fake = SteppingEngine()
    monkeypatch.setattr(engine, "load_pipeline", fake.load)
    servers = Servers(tmp_path / "data")
    yield servers
    servers.close()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "input.png", **fields):
    return {"files": {"input_reference": (name, data, "application/octet-stream")}, "data": fields}


# (what, method, path, request keyword arguments, expected status, the field the error names)
BAD_REQUESTS = [
    ("missing prompt", "post", "/v1/videos", {"json": {"seed": 1}}, 400, "prompt"),
    ("blank prompt", "post", "/v1/images/generations", {"json": {"prompt": "   "}}, 400, "prompt"),
    ("wrong type", "post", "/v1/videos", {"json": {"prompt": "x", "seconds": "ten"}}, 400, "seconds"),
    ("seed out of range", "post", "/v1/videos", {"json": {"prompt": "x", "seed": -1}}, 400, "seed"),
    ("negative guidance", "post", "/v1/videos", {"json": {"prompt": "x", "cfg": -2}}, 400, "cfg"),
    ("infinite temperature", "post", "/v1/videos", {"content": b'{"prompt": "x", "tau_video": Infinity}',
                                                    "headers": {"content-type": "application/json"}}, 400, "tau_video"),
    ("720p for 10 s", "post", "/v1/videos", {"json": {"prompt": "x", "model": "720p", "seconds": 10}}, 400, "seconds"),
    ("tiny for 7 s", "post", "/v1/videos", {"json": {"prompt": "x", "seconds": 7}}, 400, "seconds"),
    ("unknown model", "post", "/v1/videos", {"json": {"prompt": "x", "model": "sora-2"}}, 400, "model"),
    ("model as a path", "post", "/v1/videos", {"json": {"prompt": "x", "model": "../../etc"}}, 400, "model"),
    ("unknown field", "post", "/v1/videos", {"json": {"prompt": "x", "steps": 3}}, 400, "steps"),
    ("not JSON", "post", "/v1/videos", {"content": b"{prompt", "headers": {"content-type": "application/json"}},
     400, "body"),
    ("input as a path", "post", "/v1/videos", {"json": {"prompt": "x", "input_reference": "/etc/passwd"}},
     400, "input_reference"),
    ("non-image upload", "post", "/v1/videos", upload(b"#!/bin/sh\nrm -rf /\n", "x.png", prompt="x"),
     400, "input_reference"),
    ("corrupt image upload", "post", "/v1/videos", upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, prompt="x"),
     400, "input_reference"),
    ("huge upload", "post", "/v1/videos", upload(b"\x89PNG\r\n\x1a\n" + b"\0" * (3 << 20), prompt="x"),
     413, "input_reference"),
    ("size for t2v", "post", "/v1/videos", {"json": {"prompt": "x", "size": "1280x720"}}, 400, "size"),
    ("two images", "post", "/v1/images/generations", {"json": {"prompt": "x", "n": 2}}, 400, "n"),
    ("traversal in an id", "get", "/v1/videos/..%5C..%5Cjobs.sqlite3/content", {}, 400, "video_id"),
    ("traversal in a path", "get", "/v1/videos/..%2F..%2Fjobs.sqlite3", {}, 404, None),
    ("unknown id", "delete", "/v1/videos/video_" + "0" * 32, {}, 404, None),
]


@pytest.mark.parametrize("what, method, path, kwargs, status, field", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_bad_request_is_a_4xx_json_error_naming_the_field(servers, tmp_path, what, method, path, kwargs, status,
                                                          field):
    client = servers.start(max_upload=2 << 20)
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == field and error["message"]
    if field and field not in ("body",):
        assert field in error["message"] or what in ("missing prompt", "blank prompt", "720p for 10 s",
                                                     "tiny for 7 s", "unknown model", "model as a path",
                                                     "non-image upload", "corrupt image upload", "huge upload")
    assert data_files(tmp_path) == []  # no upload kept, no output written
    assert client.get("/v1/videos").json()["data"] == []  # no job, so none stuck
    assert client.get("/health").json()["queued"] == 0


def test_messages_are_the_clis(servers):
    client = servers.start()
    answer = client.post("/v1/videos", json={"prompt": "x", "model": "720p", "seconds": 10}).json()
    assert answer["error"]["message"] == ("10 s videos are not available at 720p, which makes 5 s videos; "
                                          "use --res 480p (or leave out --res)")
    assert client.post("/v1/videos", json={"prompt": " "}).json()["error"]["message"] == "the prompt is empty"


def test_an_upload_is_stored_under_the_job_id_whatever_its_name(servers, tmp_path):
    client = servers.start()
    answer = client.post("/v1/videos", **upload(png_bytes(), "../../../evil.png", prompt="x", seed="3"))
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["mode"] == "i2v" and job["seed"] == 3
    assert finished(client, job["id"])["status"] == "completed"
    assert (tmp_path / "data" / "uploads" / f"{job['id']}.png").is_file()
    assert not list(tmp_path.rglob("evil*"))


def test_a_token_is_required_when_configured(servers):
    client = servers.start(token=TOKEN)
    for method, path in (("get", "/v1/videos"), ("post", "/v1/videos"), ("get", "/v1/models")):
        answer = getattr(client, method)(path)
        assert answer.status_code == 401 and answer.json()["error"]["param"] == "Authorization"
    wrong = client.get("/v1/videos", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = client.get("/v1/videos", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert client.get("/").status_code == 200 and client.get("/health").status_code == 200


def test_a_huge_body_without_content_length_is_cut_off(servers, tmp_path):
    client = servers.start(max_upload=1 << 20)

    def chunks():  # sent chunked: no Content-Length for the guard to read
        yield b'{"prompt": "' + b"x" * (1 << 20)
        yield b"y" * (2 << 20) + b'"}'

    answer = client.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["param"] == "input_reference"
    assert data_files(tmp_path) == [] and client.get("/v1/videos").json()["data"] == []
