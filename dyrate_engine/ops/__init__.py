"""The fused pruning ops (docs/DESIGN.md) and the decoder's ``decode_linear``, registered as
``torch.ops.dyrate.*``.

Each pruning op has a C++ CPU kernel, a CUDA kernel (``decode_linear`` is cuBLAS there), a readable
PyTorch reference (``*_reference``, also the fallback when the extension is not built) and a fake
kernel for torch.compile. ``decode_attention`` has a Triton kernel on CUDA and a C++ one on the
CPU; its monitor variant, Triton on CUDA and its reference on the CPU. The functions here
validate their arguments and document the contracts. ``packed_linear`` keeps MKL-packed copies of
fp32 weights for a decode step's row count. ``decoder_elementwise`` holds the layer's RMSNorm,
SiLU-gate and RoPE as one-pass C++ kernels on the CPU; ``causal_attention`` the prefill's
attention, a C++ kernel on the CPU and SDPA elsewhere.
"""
from ._library import EXTENSION_LOADED, backends, cpu_isa
from .attention_scores import (
    IMAGE,
    INSTRUCTION,
    RESPONSE,
    SYSTEM,
    attention_scores,
    attention_scores_reference,
)
from .causal_attention import causal_attention, causal_attention_reference
from .compact_kv import compact_kv_, compact_kv_reference, compact_source_slots
from .decode_attention import (
    TRITON_AVAILABLE,
    decode_attention,
    decode_attention_monitor,
    decode_attention_monitor_reference,
    decode_attention_reference,
)
from .decode_linear import decode_linear, decode_linear_reference
from .decoder_elementwise import (
    add_rms_norm,
    add_rms_norm_reference,
    rms_norm,
    rms_norm_reference,
    rope,
    rope_reference,
    silu_mul,
    silu_mul_reference,
)
from ._slots import visual_rank_table
from .select_keep import select_keep, select_keep_reference

__all__ = [
    "EXTENSION_LOADED", "backends", "cpu_isa", "attention_scores", "attention_scores_reference",
    "select_keep", "select_keep_reference", "compact_kv_", "compact_kv_reference",
    "compact_source_slots", "decode_linear", "decode_linear_reference", "SYSTEM", "IMAGE",
    "INSTRUCTION", "RESPONSE", "decode_attention", "decode_attention_reference",
    "decode_attention_monitor", "decode_attention_monitor_reference", "visual_rank_table",
    "TRITON_AVAILABLE", "rms_norm", "rms_norm_reference", "add_rms_norm",
    "add_rms_norm_reference", "silu_mul", "silu_mul_reference", "rope", "rope_reference",
    "causal_attention", "causal_attention_reference",
]
