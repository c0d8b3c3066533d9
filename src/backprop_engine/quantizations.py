"""The GGUF types an export can write: the one table the converter, llama.cpp's quantizer, the size and disk
estimates, the CLI and the app read. Light on purpose: ``backprop --help`` lists the names."""

from __future__ import annotations

# name: (llama.cpp file type, approximate bits per weight: llama.cpp's figures, for size and disk estimates)
_TYPES = {
    "f32": ("LLAMA_FTYPE_ALL_F32", 32.0),
    "f16": ("LLAMA_FTYPE_MOSTLY_F16", 16.0),
    "bf16": ("LLAMA_FTYPE_MOSTLY_BF16", 16.0),
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8.5),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6.6),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.7),
    "q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", 5.5),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.9),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 4.5),  # 32 four-bit weights + one f16 scale per block
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 3.9),
    "q2_k": ("LLAMA_FTYPE_MOSTLY_Q2_K", 3.4),
}
QUANTIZATIONS = {name: ftype for name, (ftype, _) in _TYPES.items()}  # our names → llama.cpp file types
BITS_PER_WEIGHT = {name: bits for name, (_, bits) in _TYPES.items()}
DIRECT_TYPES = ("f32", "f16")  # written by our converter itself, without llama.cpp's quantizer
DEFAULT_QUANTIZATION = "q4_k_m"
