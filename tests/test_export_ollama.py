"""Ollama: the TEMPLATE rendered by Go's text/template equals apply_chat_template byte for byte, the Modelfile
quotes what it must and refuses what it cannot, and registration works through the CLI and the HTTP API."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backprop_engine.errors import BackpropError, ConfigError, ExportError
from backprop_engine.events import EventBus
from backprop_engine.export.chat_format import (
    CHECK_CONVERSATIONS,
    adds_bos,
    derive_chat_format,
    end_of_turn_tokens,
)
from backprop_engine.export.modelfile import Modelfile, check_ollama_name, quote
from backprop_engine.export.ollama import base_url, file_sha256, register

from .families import build_tokenizer
from .ollama_server import FakeOllama

TEMPLATE_FAMILIES = ["llama3", "mistral", "qwen2.5", "gemma", "generic"]
EXPECTED_FAMILY = {
    "llama3": "llama3",
    "mistral": "mistral",
    "qwen2.5": "chatml",
    "gemma": "gemma",
    "generic": "generic",
}
EXPECTED_STOPS = {
    "llama3": ["<|eot_id|>"],
    "mistral": ["</s>"],
    "qwen2.5": ["<|im_end|>"],
    "gemma": ["<end_of_turn>"],
    "generic": ["<|endoftext|>"],
}
# Beyond CHECK_CONVERSATIONS (which every derived format must pass at export time): others the Go test adds.
MORE_CONVERSATIONS = [
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ],
    [{"role": "user", "content": "Tabs\tand\nnew lines, <b>tags</b>, back\\slashes and $dollars"}],
]


def _go_render(renderer: str, template: str, conversations: list, tmp_path: Path) -> list[str]:
    (tmp_path / "template.tmpl").write_text(template, encoding="utf-8")
    (tmp_path / "conversations.json").write_text(json.dumps(conversations), encoding="utf-8")
    result = subprocess.run(
        [renderer, str(tmp_path / "template.tmpl"), str(tmp_path / "conversations.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", TEMPLATE_FAMILIES)
def test_go_template_renders_exactly_what_the_chat_template_renders(go, tmp_path, family):
    tokenizer = build_tokenizer(family)
    fmt = derive_chat_format(tokenizer)
    assert fmt.family == EXPECTED_FAMILY[family]
    conversations = CHECK_CONVERSATIONS + MORE_CONVERSATIONS
    rendered = _go_render(go, fmt.go_template(), conversations, tmp_path)
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    for conversation, go_text in zip(conversations, rendered):
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert bos + go_text == expected, conversation
    assert end_of_turn_tokens(tokenizer, fmt) == EXPECTED_STOPS[family]


def test_go_template_adds_the_modelfile_system_prompt_like_ollama(go, tmp_path):
    """Ollama puts the Modelfile's SYSTEM in front of a conversation that has no system message."""
    tokenizer = build_tokenizer("qwen2.5")
    fmt = derive_chat_format(tokenizer)
    conversation = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}]
    [go_text] = _go_render(go, fmt.go_template(), [conversation], tmp_path)
    assert go_text == tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert "You are Qwen" not in go_text


RAISES_ON_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}"
)


@pytest.mark.parametrize("template", ["exotic", "raises-on-system"])
def test_exotic_chat_templates_are_refused_not_guessed(template):
    tokenizer = build_tokenizer("exotic")
    if template == "raises-on-system":
        tokenizer.chat_template = RAISES_ON_SYSTEM
    with pytest.raises(ExportError, match="not a plain role/content template"):
        derive_chat_format(tokenizer)


@pytest.mark.parametrize(
    "name", ["My Model", "pirate/model", "Pirate", "../pirate", "pi..rate", "", "-x", "a:b:c", "naïve"]
)
def test_invalid_ollama_names_are_refused(name):
    with pytest.raises(ConfigError, match="invalid Ollama model name"):
        check_ollama_name(name)


@pytest.mark.parametrize("name", ["pirate", "pirate:q4_k_m", "tiny-2.5b_x", "a"])
def test_valid_ollama_names(name):
    assert check_ollama_name(name) == name


def _unquote(value: str) -> tuple[str, bool]:
    if value.startswith('"""'):
        return (value[3:-3], True) if len(value) >= 6 and value.endswith('"""') else ("", False)
    if value.startswith('"'):
        return (value[1:-1], True) if len(value) >= 2 and value.endswith('"') else ("", False)
    return value, True


def _parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Ollama's Modelfile reading rules, restated: a value ends at the first space, tab or newline after which
    it is complete (bare, "quoted" or triple-quoted); there are no escape sequences."""
    commands, state, buffer, name = [], "nil", "", ""
    for char in text + "\n":
        if state == "nil" and not char.isspace():
            state, buffer = ("comment", "") if char == "#" else ("name", char)
        elif state == "comment" and char in "\r\n":
            state = "nil"
        elif state == "name":
            if char.isalpha():
                buffer += char
            else:
                assert char in " \t", f"invalid command {buffer!r}"
                name, buffer = buffer.upper(), ""
                state = "parameter" if name == "PARAMETER" else "value"
        elif state == "parameter":
            if char.isalnum() or char == "_":
                buffer += char
            else:
                assert char in " \t", f"invalid parameter {buffer!r}"
                name, buffer, state = f"PARAMETER {buffer}", "", "value"
        elif state == "value":
            value, complete = _unquote(buffer.strip())
            if char in " \t\r\n" and complete:
                commands.append((name, value))
                state, buffer = "nil", ""
            else:
                buffer += char
    assert state in ("nil", "comment"), f"unterminated {name}"
    return commands


@pytest.mark.parametrize(
    "system",
    [
        'Say "arr".\nFROM evil\nPARAMETER stop "x"\n  indented "" end "',
        '"" FROM evil',
        "plain",
        "  spaced  ",
        '"quoted"',
    ],
)
def test_modelfile_round_trips_quotes_newlines_and_cannot_be_injected(system):
    fmt = derive_chat_format(build_tokenizer("qwen2.5"))
    modelfile = Modelfile("pirate.q4_k_m.gguf", fmt.go_template(), ["<|im_end|>"], 512, system)
    commands = _parse_modelfile(modelfile.text())
    assert commands == [
        ("FROM", "./pirate.q4_k_m.gguf"),
        ("TEMPLATE", fmt.go_template()),
        ("PARAMETER stop", "<|im_end|>"),
        ("PARAMETER num_ctx", "512"),
        ("SYSTEM", system),
    ]


@pytest.mark.parametrize("system", ['triple """ quotes', "bell \x07 character", "\x1b[31mred"])
def test_unquotable_system_prompts_are_refused(system):
    with pytest.raises(ConfigError, match="SYSTEM prompt"):
        quote(system, "SYSTEM prompt")


def test_base_url_from_host_environment_and_settings(monkeypatch, tmp_path):
    from backprop_engine.settings import Settings, save_settings

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert base_url() == "http://127.0.0.1:11434"
    path = save_settings(Settings(ollama_host="http://gpu-box:11434"), tmp_path / "settings.toml")
    monkeypatch.setattr("backprop_engine.settings.settings_path", lambda: path)
    assert base_url() == "http://gpu-box:11434"
    assert base_url("example.org") == "http://example.org:11434"
    assert base_url("https://example.org/") == "https://example.org:443"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:8080")
    assert base_url() == "http://0.0.0.0:8080"


# Registration ----------------------------------------------------------------------------------------------


@pytest.fixture()
def export_dir(tmp_path) -> tuple[Path, Modelfile]:
    gguf = tmp_path / "pirate.q4_k_m.gguf"
    gguf.write_bytes(os.urandom(1 << 16))
    fmt = derive_chat_format(build_tokenizer("qwen2.5"))
    modelfile = Modelfile(gguf.name, fmt.go_template(), ["<|im_end|>"], 512, "You are a pirate.")
    path = tmp_path / "pirate.q4_k_m.Modelfile"
    path.write_text(modelfile.text())
    return path, modelfile


@pytest.fixture()
def no_ollama_cli(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_registration_over_http_uploads_by_digest_and_creates(export_dir, no_ollama_cli):
    path, modelfile = export_dir
    events = []
    with FakeOllama() as server:
        assert (
            register("pirate", path, modelfile, host=server.url, bus=EventBus([events.append])) == server.url
        )
        digest = "sha256:" + file_sha256(path.parent / modelfile.model)
        assert server.blobs[digest] == (path.parent / modelfile.model).read_bytes()
        created = server.models["pirate"]
        assert created["files"] == {modelfile.model: digest}
        assert created["template"] == modelfile.template and created["system"] == "You are a pirate."
        assert created["parameters"] == {"stop": ["<|im_end|>"], "num_ctx": 512}
        assert [e.detail for e in events][-2:] == ["writing manifest", "success"]
        # A second registration finds the blob by HEAD and does not upload it again.
        uploads = sum(method == "POST" and "/api/blobs/" in p for method, p in server.requests)
        register("pirate:v2", path, modelfile, host=server.url)
        assert sum(method == "POST" and "/api/blobs/" in p for method, p in server.requests) == uploads
        assert ("HEAD", f"/api/blobs/{digest}") in server.requests


def test_registration_uses_ollama_host_from_the_environment(export_dir, no_ollama_cli, monkeypatch):
    path, modelfile = export_dir
    with FakeOllama() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://"))
        register("pirate", path, modelfile)
        assert "pirate" in server.models


def test_server_down_is_a_clear_error(export_dir, no_ollama_cli):
    path, modelfile = export_dir
    with FakeOllama() as server:
        url = server.url
    with pytest.raises(ExportError, match=f"cannot reach Ollama at {url}") as info:
        register("pirate", path, modelfile, host=url)
    assert "ollama serve" in info.value.hint


def test_server_out_of_disk_is_a_clear_error(export_dir, no_ollama_cli):
    path, modelfile = export_dir
    with FakeOllama() as server:
        server.disk_full = True
        with pytest.raises(ExportError, match="no space left on device"):
            register("pirate", path, modelfile, host=server.url)
        assert server.models == {}


def test_server_rejects_a_wrong_digest_and_a_missing_blob(export_dir):
    """The loopback server checks digests as Ollama does (this guards the stand-in itself)."""
    import httpx

    path, modelfile = export_dir
    with FakeOllama() as server:
        wrong = httpx.post(f"{server.url}/api/blobs/sha256:{'0' * 64}", content=b"not that")
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
        assert httpx.head(f"{server.url}/api/blobs/sha256:{'0' * 64}").status_code == 404
        reply = httpx.post(
            f"{server.url}/api/create", json={"model": "x", "files": {"a.gguf": f"sha256:{'1' * 64}"}}
        )
        assert json.loads(reply.text.strip().splitlines()[-1])["error"].endswith("no such file or directory")
        assert httpx.post(f"{server.url}/api/create", json={"model": "bad name"}).json() == {
            "error": "invalid model name"
        }


def test_create_refused_by_the_server_is_a_clear_error(export_dir, no_ollama_cli):
    path, modelfile = export_dir
    with FakeOllama() as server, pytest.raises(ExportError, match="invalid model name"):
        # check_ollama_name is stricter than the server; bypass it to see the server's own refusal reported.
        from backprop_engine.export import ollama

        ollama._register_over_http(server.url, "bad name", path.parent, modelfile, EventBus())


FAKE_OLLAMA_CLI = """#!{python}
import json, os, sys
from pathlib import Path
modelfile = Path(sys.argv[sys.argv.index("-f") + 1])
record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "modelfile": modelfile.read_text(), "host": os.environ["OLLAMA_HOST"]}}
Path(os.environ["FAKE_OLLAMA_LOG"]).write_text(json.dumps(record))
print("gathering model components")
print("success")
sys.exit(int(os.environ.get("FAKE_OLLAMA_EXIT", "0")))
"""


@pytest.fixture()
def fake_cli(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "ollama"
    cli.write_text(FAKE_OLLAMA_CLI.format(python=sys.executable))
    cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_OLLAMA_LOG", str(tmp_path / "ollama-call.json"))
    return tmp_path / "ollama-call.json"


def test_registration_prefers_the_ollama_cli_on_path(export_dir, fake_cli, monkeypatch):
    path, modelfile = export_dir
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    events = []
    assert register("pirate", path, modelfile, bus=EventBus([events.append])) == "ollama CLI"
    call = json.loads(fake_cli.read_text())
    assert call["argv"] == ["create", "pirate", "-f", str(path)]
    assert call["host"] == "http://127.0.0.1:11434"
    assert Path(call["cwd"]) == path.parent
    assert call["modelfile"] == path.read_text()
    assert [e.detail for e in events][-1] == "success"


def test_ollama_cli_failure_is_a_clear_error(export_dir, fake_cli, monkeypatch):
    path, modelfile = export_dir
    monkeypatch.setenv("FAKE_OLLAMA_EXIT", "1")
    with pytest.raises(BackpropError, match="`ollama create pirate` failed: success"):
        register("pirate", path, modelfile)


def test_qwen3_thinking_template_is_refused_by_name(tmp_path):
    """Qwen3's own template (as llama.cpp ships it) drops <think> blocks of earlier turns: refused, not approximated."""
    from .llamacpp_reference import SDIST, fetch_reference_converter
    from .realweights import weights_cache

    script = fetch_reference_converter(weights_cache() / SDIST.replace("==", "-"))
    tokenizer = build_tokenizer("qwen2.5")
    tokenizer.chat_template = (script.parent / "models" / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text()
    plain = CHECK_CONVERSATIONS[0]
    assert tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True).startswith(
        "<|im_start|>user"
    )
    with pytest.raises(ExportError, match=r"thinking mode \(Qwen3\)"):
        derive_chat_format(tokenizer)
