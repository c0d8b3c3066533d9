"""llama.cpp's own ``convert_hf_to_gguf.py``, to compare our converter with tensor for tensor (tests and bench).

It comes from the llama-cpp-python source distribution of the version we pin (downloaded with pip into a cache
folder, never vendored) and needs ``sentencepiece`` (installed into that folder). It recognises byte-level BPE
pre-tokenizers only by hashing the tokens of known hub tokenizers, so it refuses our locally trained ones; it is
told the pre-tokenizer name our converter found (the only thing patched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"
CONVERTER_FILES = ("convert_hf_to_gguf.py", "gguf-py", "conversion", "models/templates")
THEIRS = """
import runpy, sys
script, pre, model, out = sys.argv[1:5]
sys.path[:0] = [str(__import__("pathlib").Path(script).parent), str(__import__("pathlib").Path(script).parent / "gguf-py")]
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [script, model, "--outfile", out, "--outtype", "f16"]
runpy.run_path(script, run_name="__main__")
"""


def fetch_reference_converter(workdir: Path) -> Path:
    """``workdir/llama.cpp/convert_hf_to_gguf.py`` (with its packages and chat templates), fetched once."""
    script = workdir / "llama.cpp" / "convert_hf_to_gguf.py"
    if script.is_file() and (workdir / "deps").is_dir():
        return script
    workdir.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "download", SDIST, "--no-binary", ":all:", "--no-deps", "-d", str(workdir)], check=True
    )
    subprocess.run([*pip, "install", "--target", str(workdir / "deps"), "sentencepiece"], check=True)
    archive = next(workdir.glob("llama_cpp_python-*.tar.gz"))
    prefix = archive.name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(CONVERTER_FILES)
        ]
        for member in members:
            member.name = "llama.cpp/" + member.name[len(prefix) :]
        tar.extractall(workdir, members=members, filter="data")
    archive.unlink()
    return script


def reference_env(workdir: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(workdir / "deps"), os.environ.get("PYTHONPATH", "")]),
    }


def pre_name(model_dir: Path) -> str:
    from backprop_engine.export.gguf_writer import _pre_tokenizer_name

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    if tokenizer_json["model"].get("byte_fallback"):
        return "default"
    return _pre_tokenizer_name(tokenizer_json, model_dir)


def convert_with_llama_cpp(script: Path, model_dir: Path, out: Path) -> Path:
    """llama.cpp's f16 GGUF of ``model_dir``."""
    result = subprocess.run(
        [sys.executable, "-c", THEIRS, str(script), pre_name(model_dir), str(model_dir), str(out)],
        env=reference_env(script.parent.parent),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed on {model_dir}: {result.stderr[-2000:]}")
    return out
