#!/usr/bin/env bash
# Prepares .whl/ (git-ignored) for bench/gpu_check.py on a lent GPU machine, which has no network: the wheels our
# engine, QLoRA and Unsloth need beyond that machine's image (python3 3.12, torch 2.11+cu130, transformers 5.17,
# peft, accelerate, tokenizers, ...; /work/.library/device/KINDS.md), and .whl/models/ with the real
# SmolLM2-135M-Instruct and Gemma-3-270M configs and tokenizers (gpu_check.py --prepare; no weights: the GPU
# check builds random ones from those configs).
#
# Everything that travels must stay under 64 MiB per call. Two wheels are too big as published and are slimmed
# here (their files unzipped, rezipped without the parts that machine never loads):
#   bitsandbytes 41 MiB -> keeps libbitsandbytes_cpu/_cuda130 (torch there is cu130; drops cuda118-128/132, ROCm, XPU);
#   unsloth 27 MiB      -> drops studio/ (its web UI; `import unsloth` never touches it).
# Not carried: xformers (its wheels are built per torch version; Unsloth runs without it), diffusers (Unsloth does
# not import it for text models), and of our own dependencies textual (the app), ollama and llama-cpp-python
# (export only; llama-cpp-python has no wheel and builds from source).
# Unsloth's set goes to .whl/unsloth/ and is installed apart (gpu_check.py --unsloth-site): an Unsloth or torchao
# that does not work with that torch then breaks the Unsloth rows only.
#
#   bash bench/gpu_wheels.sh            # here, once (~2 min; downloads ~80 MB, keeps ~26 MiB)
# then on the device (carry [".whl"], timeout_s 570):
#   I="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target"; $I /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; $I /tmp/site-unsloth .whl/unsloth/*.whl || echo "no Unsloth: its rows say so"; HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --models .whl/models --unsloth-site /tmp/site-unsloth 2>&1 | tee $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

# Names only: the versions come from constraints-unsloth.txt, the set tested together with transformers 5.17 and
# huggingface_hub 1.33 (those of that machine's image), which also holds our own dependencies.
ENGINE=(datasets dill multiprocess datasketch platformdirs tomli_w gguf)
QLORA=(bitsandbytes)
UNSLOTH=(unsloth unsloth_zoo trl torchao cut-cross-entropy tyro docstring_parser typeguard hf_transfer msgspec
  pydantic pydantic_core annotated-types typing-inspection nest-asyncio json5 structlog)

download() {  # folder, names...
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -c constraints-unsloth.txt -d "$@"
}
rm -rf .whl && mkdir -p .whl/unsloth
download .whl "${ENGINE[@]}" "${QLORA[@]}"
download .whl/unsloth "${UNSLOTH[@]}"

"$PYTHON" - <<'EOF'
import re
import zipfile
from pathlib import Path

DROP = {
    "bitsandbytes": re.compile(r"bitsandbytes/libbitsandbytes_(?!cpu\.|cuda130\.).*"),
    "unsloth": re.compile(r"studio/.*"),
}
for wheel in [*Path(".whl").glob("*.whl"), *Path(".whl/unsloth").glob("*.whl")]:
    drop = DROP.get(wheel.name.split("-")[0])
    if drop is None:
        continue
    slim = wheel.with_name(wheel.name + ".part")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            if drop.fullmatch(item.filename):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(
                    line for line in data.splitlines(keepends=True) if not drop.fullmatch(line.split(b",")[0].decode())
                )
            out.writestr(item, data)
    print(f"slimmed {wheel.name}: {wheel.stat().st_size / 2**20:.1f} -> {slim.stat().st_size / 2**20:.1f} MiB")
    slim.replace(wheel)
EOF

HF_HUB_OFFLINE=1 PYTHONPATH=src "$PYTHON" bench/gpu_check.py --prepare .whl/models
du -sh .whl/*.whl .whl/unsloth/*.whl | sort -h | tail -6
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
du -sb .whl | awk -v tree="$tree" '{printf "total: %.1f MiB, with the working tree %.1f MiB (the limit is 64 MiB)\n", $1 / 2^20, ($1 + tree) / 2^20}'
