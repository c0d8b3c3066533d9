"""Export: merge, HF→GGUF conversion, llama.cpp quantization, verification, Ollama Modelfile and registration, chat."""

from ..quantizations import QUANTIZATIONS
from .chat import chat_once, find_gguf
from .gguf_writer import convert_hf_to_gguf
from .pipeline import ExportOptions, ExportResult, export, resolve_source
from .quantize import quantize_gguf

__all__ = [
    "QUANTIZATIONS",
    "ExportOptions",
    "ExportResult",
    "chat_once",
    "convert_hf_to_gguf",
    "export",
    "find_gguf",
    "quantize_gguf",
    "resolve_source",
]
