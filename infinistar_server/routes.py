"""HTTP endpoints: the OpenAI-style video job API, image generation, models, health and the page."""
from __future__ import annotations

import asyncio
import base64
import json
import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from engine import __version__, presets
from infinistar_server.schemas import FieldError, ImageParams, VideoParams, plan_image, plan_video
from infinistar_server.store import TERMINAL
from infinistar_server.uploads import check_upload, save_upload

router = APIRouter()
JobId = Annotated[str, PathParam(pattern=r"^video_[0-9a-f]{32}$", description="A job id from POST /v1/videos.")]
CANCEL_WAIT_S = 30.0
FORM_LIMITS = {"max_files": 1, "max_fields": 64, "max_part_size": 256 << 10}
MEDIA_TYPES = {".mp4": "video/mp4", ".png": "image/png"}


def _body_schema(model) -> dict:
    schema = model.model_json_schema()
    form = json.loads(json.dumps(schema))
    form["properties"]["input_reference"] = {"type": "string", "format": "binary",
                                             "description": "Image (i2v) or video (extend) to condition on."}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "multipart/form-data": {"schema": form}}}}


def _seconds(params: dict, metadata: Optional[dict]) -> str:
    if metadata and metadata.get("output_frames") and metadata.get("fps"):
        return f"{(metadata['output_frames'] - 1) / metadata['fps']:g}"
    return "" if params.get("seconds") is None else str(params["seconds"])


def job_view(request: Request, job: dict) -> dict:
    """A job in the OpenAI video object's shape, with infinistar's own fields added."""
    params, metadata = job["params"], job["metadata"]
    view = {
        "id": job["id"], "object": "video", "status": job["status"], "progress": job["progress"],
        "created_at": job["created_at"], "completed_at": job["completed_at"], "model": params["model"],
        "prompt": params["prompt"], "seconds": _seconds(params, metadata),
        "size": f"{metadata['width']}x{metadata['height']}" if metadata and metadata.get("width") else "",
        "error": job["error"], "mode": params["mode"], "seed": params["seed"], "stage": job["stage"],
        "eta_seconds": None, "content_url": None, "metadata": metadata,
    }
    live = request.app.state.worker.live(job["id"]) if job["status"] in ("queued", "in_progress") else None
    view.update(live or {})
    if job["status"] == "completed":
        view["content_url"] = f"/v1/videos/{job['id']}/content"
    return view


def _get(request: Request, job_id: str) -> dict:
    job = request.app.state.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


async def _read_video_body(request: Request) -> tuple[dict, Optional[UploadFile]]:
    kind = request.headers.get("content-type", "")
    if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(**FORM_LIMITS)
        data: dict = {}
        upload = None
        for key, value in form.multi_items():
            if key == "input_reference":
                if not isinstance(value, UploadFile):
                    raise FieldError(key, "input_reference must be an uploaded file; URLs and paths are not read")
                upload = value
            elif isinstance(value, UploadFile):
                raise FieldError(key, f"{key} cannot be a file")
            elif key in ("then", "then[]"):
                data.setdefault("then", []).append(value)
            elif value != "":
                data[key] = value
        return data, upload
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise FieldError("body", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise FieldError("body", "the body must be a JSON object")
    if "input_reference" in data:
        raise FieldError("input_reference", "send input_reference as a multipart upload; URLs and paths are not read")
    return data, None


@router.post("/v1/videos", tags=["videos"], openapi_extra=_body_schema(VideoParams),
             summary="Queue a video job (t2v; i2v or extend with an input_reference upload)")
async def create_video(request: Request) -> dict:
    data, upload = await _read_video_body(request)
    params = VideoParams.model_validate(data)
    state = request.app.state
    job_id = f"video_{secrets.token_hex(16)}"
    upload_path: Optional[Path] = None
    try:
        mode = "t2v"
        if upload is not None:
            kind, upload_path = await save_upload(upload, state.uploads, job_id, state.settings.max_upload)
            mode = "i2v" if kind == "image" else "extend"
        plan = plan_video(params, mode, state.settings.model)
        if upload_path is not None:
            check_upload(mode, upload_path)
        job = state.worker.submit(job_id, "video", plan, upload_path.name if upload_path else None)
    except BaseException:
        if upload_path is not None:
            upload_path.unlink(missing_ok=True)
        raise
    return job_view(request, job)


@router.get("/v1/videos", tags=["videos"], summary="List jobs, newest first")
async def list_videos(request: Request, after: Optional[str] = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                      order: Literal["asc", "desc"] = "desc") -> dict:
    jobs, more = request.app.state.store.page(after, limit, order == "desc")
    data = [job_view(request, job) for job in jobs]
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/v1/videos/{video_id}", tags=["videos"], summary="A job's status, progress, stage, ETA, error")
async def retrieve_video(request: Request, video_id: JobId) -> dict:
    return job_view(request, _get(request, video_id))


@router.get("/v1/videos/{video_id}/content", tags=["videos"], summary="The finished MP4 (PNG for images)")
async def video_content(request: Request, video_id: JobId, variant: Literal["video"] = "video"):
    job = _get(request, video_id)
    if job["status"] != "completed":
        raise HTTPException(409 if job["status"] not in TERMINAL else 404,
                            f"job {video_id} is {job['status']}; it has no content")
    path = request.app.state.outputs / job["output"]
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix), filename=path.name)


@router.get("/v1/videos/{video_id}/events", tags=["videos"], summary="Progress as server-sent events")
async def video_events(request: Request, video_id: JobId):
    _get(request, video_id)

    async def stream():
        last = None
        while True:
            job = request.app.state.store.get(video_id)
            if job is None:
                return
            view = job_view(request, job)
            text = json.dumps(view, default=str)
            if text != last:
                last = text
                yield f"event: {'done' if job['status'] in TERMINAL else 'progress'}\ndata: {text}\n\n"
            if job["status"] in TERMINAL or await request.is_disconnected():
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/v1/videos/{video_id}", tags=["videos"],
               summary="Cancel a queued or running job (no file is left); delete a finished one")
async def delete_video(request: Request, video_id: JobId) -> dict:
    state = request.app.state
    job = _get(request, video_id)
    if job["status"] in ("queued", "in_progress"):
        state.worker.cancel(video_id)
        for _ in range(int(CANCEL_WAIT_S / 0.05)):
            job = state.store.get(video_id)
            if job["status"] in TERMINAL:
                break
            await asyncio.sleep(0.05)
        return job_view(request, job)
    for name in (job["output"], job["output"] and f"{job['output']}.json"):
        if name:
            (state.outputs / name).unlink(missing_ok=True)
    if job["upload"]:
        (state.uploads / job["upload"]).unlink(missing_ok=True)
    state.store.delete(video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.post("/v1/images/generations", tags=["images"], summary="Generate an image (t2i); waits for it")
async def generate_image(request: Request, params: ImageParams) -> dict:
    state = request.app.state
    job_id = f"video_{secrets.token_hex(16)}"
    job = state.worker.submit(job_id, "image", plan_image(params, state.settings.model))
    while job["status"] not in TERMINAL:
        await asyncio.sleep(0.1)
        job = state.store.get(job_id)
    if job["status"] != "completed":
        error = job["error"] or {"message": f"the job was {job['status']}"}
        raise HTTPException(500 if job["status"] == "failed" else 409, error["message"])
    item = {"revised_prompt": (job["metadata"] or {}).get("prompt_sent")}
    if params.response_format == "url":
        item["url"] = f"/v1/videos/{job_id}/content"
    else:
        item["b64_json"] = base64.b64encode((state.outputs / job["output"]).read_bytes()).decode("ascii")
    return {"created": job["created_at"], "id": job_id, "seed": job["params"]["seed"], "data": [item]}


@router.get("/v1/models", tags=["models"], summary="Models jobs may name")
async def list_models(request: Request) -> dict:
    settings, loaded = request.app.state.settings, request.app.state.worker.status()["model_loaded"]
    names = list(presets.names()) + ([settings.model] if settings.model and settings.model not in presets.names()
                                     else [])
    default = settings.model or "720p"
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "infinistar",
                                        "loaded": name == loaded, "default": name == default} for name in names]}


def _rss_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@router.get("/health", tags=["server"], summary="Liveness, the loaded model, the queue, memory")
async def health(request: Request) -> dict:
    return {"status": "ok", "version": __version__, **request.app.state.worker.status(), "rss_bytes": _rss_bytes()}


def _page(name: str) -> str:
    return resources.files("infinistar_server").joinpath("web", name).read_text(encoding="utf-8")


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_page("index.html"))


@router.get("/app.js", include_in_schema=False)
async def page_script() -> Response:
    return Response(_page("app.js"), media_type="text/javascript")
