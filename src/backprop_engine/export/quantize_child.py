"""One llama.cpp quantization in a process of its own, which a stop can end mid-file (llama.cpp's quantize has
no callback to stop it). quantize.py runs this file by its path, ``python quantize_child.py SOURCE TARGET FTYPE
THREADS GATE``, so that it starts in a fraction of a second: it imports llama-cpp-python and nothing of
backprop. llama.cpp's log goes to stderr (a line per tensor, which the parent counts); the exit status is
llama.cpp's. GATE: the test hook (progress.py), or "".
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import time
from pathlib import Path

_TENSOR_LINE = re.compile(rb"\[\s*\d+/\s*\d+\]")  # "[  12/ 211] blk.0.attn_q.weight - ..."


def quantize(source: Path, target: Path, ftype: int, threads: int) -> int:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, threads
    return llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))


def main(source: str, target: str, ftype: str, threads: str, gate: str) -> int:
    import llama_cpp

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C ends llama.cpp at once, not after the file

    @llama_cpp.llama_log_callback
    def log(level: int, text: bytes, user_data) -> None:
        os.write(2, text)
        while gate and _TENSOR_LINE.match(text) and not os.path.exists(gate):  # held after its first tensor
            time.sleep(0.02)

    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    return quantize(Path(source), Path(target), int(ftype), int(threads))


if __name__ == "__main__":
    # Python put this file's folder first on the path: its neighbours (chat.py, ...) are not top-level modules.
    del sys.path[0]
    sys.exit(main(*sys.argv[1:]))
