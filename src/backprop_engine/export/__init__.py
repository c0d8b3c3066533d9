"""Export: merge, HF→GGUF conversion, llama.cpp quantization, chat."""

from .chat import chat_once, find_gguf
from .gguf_writer import convert_hf_to_gguf
from .pipeline import ExportResult, export_run
from .quantize import QUANTIZATIONS, quantize_gguf

__all__ = ["QUANTIZATIONS", "ExportResult", "chat_once", "convert_hf_to_gguf", "export_run", "find_gguf", "quantize_gguf"]
