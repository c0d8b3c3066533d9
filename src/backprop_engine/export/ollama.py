"""Register an exported GGUF with Ollama: the ``ollama`` CLI when it is on PATH, else the HTTP API.

The server is ``host`` if given, else ``$OLLAMA_HOST``, else the ``ollama_host`` setting (the CLI gets it as
``OLLAMA_HOST`` too).

HTTP: the GGUF is uploaded as a blob named by its sha256 digest (skipped when ``HEAD /api/blobs/<digest>``
says the server has it), then ``/api/create`` gets the file by digest with the template, stop parameters and
system prompt; its streamed status lines become progress events.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import ExportError
from ..events import EventBus, ExportProgress
from .modelfile import Modelfile, check_ollama_name

DEFAULT_HOST = "127.0.0.1:11434"


def register(
    name: str,
    modelfile_path: Path,
    modelfile: Modelfile,
    host: str | None = None,
    bus: EventBus | None = None,
) -> str:
    """Create Ollama model ``name`` from ``modelfile_path`` (its FROM file lies next to it); returns how."""
    check_ollama_name(name)
    bus = bus or EventBus()
    url = base_url(host)
    cli = shutil.which("ollama")
    if cli:
        _register_with_cli(cli, name, modelfile_path, url, bus)
        return "ollama CLI"
    _register_over_http(url, name, modelfile_path.parent, modelfile, bus)
    return url


def base_url(host: str | None = None) -> str:
    """``host``, ``$OLLAMA_HOST`` or the setting (``host``, ``host:port`` or a URL) as a full base URL."""
    host = (host or os.environ.get("OLLAMA_HOST") or _settings_host()).strip().rstrip("/")
    scheme, _, rest = host.rpartition("://")
    scheme = scheme or "http"
    if ":" not in rest.split("/")[0]:
        rest += ":443" if scheme == "https" else ":11434"
    return f"{scheme}://{rest}"


def _settings_host() -> str:
    from ..settings import load_settings

    settings, _ = load_settings()
    return settings.ollama_host or DEFAULT_HOST


def _register_with_cli(cli: str, name: str, modelfile_path: Path, url: str, bus: EventBus) -> None:
    bus.emit(ExportProgress(stage="ollama", detail=f"ollama create {name} -f {modelfile_path.name}"))
    process = subprocess.Popen(
        [cli, "create", name, "-f", str(modelfile_path)],
        cwd=modelfile_path.parent,
        env={**os.environ, "OLLAMA_HOST": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    last = ""
    assert process.stdout is not None  # stdout=PIPE
    for line in process.stdout:
        if line.strip():
            last = line.strip()
            bus.emit(ExportProgress(stage="ollama", detail=last))
    if process.wait() != 0:
        raise ExportError(
            f"`ollama create {name}` failed: {last or f'exit status {process.returncode}'}",
            "is `ollama serve` running?",
        )


def _register_over_http(url: str, name: str, folder: Path, modelfile: Modelfile, bus: EventBus) -> None:
    import httpx
    import ollama

    client = ollama.Client(host=url)
    try:
        files = {modelfile.model: _upload_blob(client, url, folder / modelfile.model, bus)}
        adapters = (
            {modelfile.adapter: _upload_blob(client, url, folder / modelfile.adapter, bus)}
            if modelfile.adapter
            else None
        )
        bus.emit(ExportProgress(stage="ollama", detail=f"creating {name}"))
        progress = client.create(
            name,
            files=files,
            adapters=adapters,
            template=modelfile.template,
            system=modelfile.system,
            parameters=modelfile.parameters(),
            stream=True,
        )
        for update in progress:
            bus.emit(ExportProgress(stage="ollama", detail=update.status or ""))
    except ConnectionError:
        raise ExportError(
            f"cannot reach Ollama at {url}", "start it with `ollama serve`, or set OLLAMA_HOST"
        ) from None
    except (ollama.ResponseError, httpx.HTTPError) as error:
        raise ExportError(f"Ollama at {url} refused to create {name!r}: {_reason(error)}") from None


def _upload_blob(client, url: str, path: Path, bus: EventBus) -> str:
    import httpx

    digest = "sha256:" + file_sha256(path)
    try:
        exists = httpx.head(f"{url}/api/blobs/{digest}", timeout=30).status_code == 200
    except httpx.ConnectError:
        raise ConnectionError(url) from None
    if exists:
        bus.emit(ExportProgress(stage="ollama", detail=f"{path.name} already on the server"))
        return digest
    bus.emit(
        ExportProgress(
            stage="ollama", detail=f"uploading {path.name} ({path.stat().st_size / 2**20:.1f} MiB)"
        )
    )
    uploaded = client.create_blob(path)
    if uploaded != digest:
        raise ExportError(f"{path.name} changed while it was uploaded", "export again")
    return digest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    return getattr(error, "error", None) or str(error)
