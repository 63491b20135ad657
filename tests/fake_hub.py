"""A local HTTP server answering the part of the Hugging Face Hub API that snapshot_download uses.

Routes: GET /api/models/{repo}/revision/{rev} (repo info with sibling sizes and LFS hashes),
GET /api/models/{repo}/tree/{rev} (recursive listing), HEAD/GET /{repo}/resolve/{rev}/{path}
(ETag, X-Repo-Commit, Content-Length, Range requests). Faults on demand: cut a file's body
half-way once (`drop_once`), answer 500 for a file (`fail`), or accept the connection and never
answer (`silent`: every request whose path starts with one of its prefixes, "/" for all).
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".pth", ".model")


class FakeHub:
    def __init__(self, repo_id: str, files: dict[str, bytes], commit: str = "0123456789abcdef0123456789abcdef01234567"):
        self.repo_id, self.files, self.commit = repo_id, files, commit
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_once: set[str] = set()
        self.fail: set[str] = set()
        self.silent: set[str] = set()  # path prefixes that get no answer at all
        self._closing = threading.Event()
        self.authorization: set[str | None] = set()  # Authorization headers seen
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()  # lets the silent handlers go
        self._server.shutdown()
        self._server.server_close()

    def file_gets(self) -> list[str]:
        """Repo paths requested with GET on /resolve/ (the actual transfers)."""
        prefix = f"/{self.repo_id}/resolve/"
        return [p[len(prefix):].split("/", 1)[1] for m, p, _ in self.requests if m == "GET" and p.startswith(prefix)]

    def file_requests(self) -> list[tuple[str, str]]:
        prefix = f"/{self.repo_id}/resolve/"
        return [(m, p) for m, p, _ in self.requests if p.startswith(prefix)]

    # ----------------------------------------------------------------- metadata
    def _meta(self, path: str) -> dict:
        data = self.files[path]
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        meta = {"size": len(data), "oid": blob}
        if path.endswith(LFS_SUFFIXES):
            meta["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return meta

    def _etag(self, path: str) -> str:
        meta = self._meta(path)
        return meta["lfs"]["oid"] if "lfs" in meta else meta["oid"]

    def _handler(hub):  # noqa: N805 - closes over the FakeHub instance
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, obj, status: int = 200) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                body = json.dumps({"error": code}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests.append((self.command, path, self.headers.get("Range")))
                    hub.authorization.add(self.headers.get("Authorization"))
                if any(path.startswith(prefix) for prefix in hub.silent):
                    hub._closing.wait()  # the connection stays open; not a byte comes back
                    self.close_connection = True
                    return
                api = f"/api/models/{hub.repo_id}/"
                if path.startswith(api + "revision/"):
                    rev = path[len(api + "revision/"):]
                    if rev not in ("main", hub.commit):
                        return self._error(404, "RevisionNotFound")
                    siblings = []
                    for p in sorted(hub.files):
                        m = hub._meta(p)
                        s = {"rfilename": p, "size": m["size"], "blobId": m["oid"]}
                        if "lfs" in m:
                            s["lfs"] = {"sha256": m["lfs"]["oid"], "size": m["size"], "pointerSize": 134}
                        siblings.append(s)
                    return self._json({"id": hub.repo_id, "sha": hub.commit, "siblings": siblings})
                if path.startswith(api + "tree/"):
                    return self._json([{"type": "file", "path": p, **hub._meta(p)} for p in sorted(hub.files)])
                resolve = f"/{hub.repo_id}/resolve/"
                if path.startswith(resolve):
                    rev, rel = path[len(resolve):].split("/", 1)
                    if rev not in ("main", hub.commit):
                        return self._error(404, "RevisionNotFound")
                    if rel not in hub.files:
                        return self._error(404, "EntryNotFound")
                    return self._file(rel)
                self._error(404, "RepoNotFound")

            def _file(self, rel: str) -> None:
                data = hub.files[rel]
                if self.command == "GET" and rel in hub.fail:
                    return self._error(500, "ServerError")
                start = 0
                wanted = self.headers.get("Range")
                if self.command == "GET" and wanted and wanted.startswith("bytes="):
                    start = int(wanted[len("bytes="):].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", f'"{hub._etag(rel)}"')
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if self.command == "HEAD":
                    return
                body = data[start:]
                with hub._lock:
                    drop = rel in hub.drop_once
                    hub.drop_once.discard(rel)
                if drop:  # send half the body, then hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            do_GET = do_HEAD = _route

        return Handler
