"""A small loopback stand-in for the Ollama server: exactly the endpoints backprop uses, as Ollama documents them.

- ``HEAD /api/blobs/<digest>``: 200 when the blob is stored, 404 when not.
- ``POST /api/blobs/<digest>``: stores the body when its sha256 equals the digest: 201; a wrong digest: 400
  ``{"error": ...}``; a malformed digest: 400; a full disk (``disk_full``): 500 with the write error.
- ``POST /api/create`` ``{model, files, adapters, template, system, parameters, stream}``: an invalid name:
  400 ``{"error": "invalid model name"}``; otherwise newline-delimited JSON status objects ending in
  ``{"status": "success"}``, or in ``{"error": ...}`` when a referenced blob is missing.

No real Ollama server can be installed here (no package provides it), so this one keeps what it was sent for
the tests to inspect.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}(:[A-Za-z0-9][A-Za-z0-9._-]{0,79})?$")


class FakeOllama:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.disk_full = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(state: FakeOllama):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            state.requests.append(("HEAD", self.path))
            digest = self.path.removeprefix("/api/blobs/")
            self.send_response(200 if digest in state.blobs else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            body = self._body()
            if self.path.startswith("/api/blobs/"):
                self._blob(self.path.removeprefix("/api/blobs/"), body)
            elif self.path == "/api/create":
                self._create(json.loads(body))
            else:
                self._json(404, {"error": "404 page not found"})

        def _blob(self, digest: str, body: bytes) -> None:
            if not _DIGEST.match(digest):
                return self._json(400, {"error": "invalid digest format"})
            actual = "sha256:" + hashlib.sha256(body).hexdigest()
            if actual != digest:
                return self._json(400, {"error": f"digest mismatch, expected {digest!r}, got {actual!r}"})
            if state.disk_full:
                return self._json(
                    500,
                    {
                        "error": f"write /root/.ollama/models/blobs/{digest.replace(':', '-')}: no space left on device"
                    },
                )
            state.blobs[digest] = body
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _create(self, request: dict) -> None:
            name = request.get("model", "")
            if not _NAME.match(name):
                return self._json(400, {"error": "invalid model name"})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            self._line({"status": "parsing GGUF"})
            for digest in {**request.get("files", {}), **(request.get("adapters") or {})}.values():
                if digest not in state.blobs:
                    return self._line({"error": f"open {digest}: no such file or directory"})
                self._line({"status": f"using existing layer {digest}"})
            for key in ("template", "system", "parameters"):
                if request.get(key):
                    layer = hashlib.sha256(json.dumps(request[key]).encode()).hexdigest()
                    self._line({"status": f"creating new layer sha256:{layer}"})
            self._line({"status": "writing manifest"})
            state.models[name] = request
            self._line({"status": "success"})

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().strip(), 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _line(self, payload: dict) -> None:
            self.wfile.write(json.dumps(payload).encode() + b"\n")
            self.wfile.flush()

    return Handler
