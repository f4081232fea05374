"""``causal_attention``: a prompt's causal self-attention, for the prefill.

Query ``t`` of ``T`` sees keys ``[0, t + S - T]`` of ``S`` (the queries are the last ``T``
positions; ``S == T`` for a whole prompt). The C++ CPU kernel computes each block of 64 queries
against exactly the keys its last query sees, where PyTorch's CPU SDPA works in key blocks of 512
and computes about 1.6x the causal products of a 600-token prompt; see
``csrc/cpu/causal_attention.cpp``. On CUDA the reference (SDPA, flash where it applies) serves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from ._library import ensure_registered
from ._validate import check_causal_attention


def causal_attention_reference(q, k, v, scale=None):
    """Readable PyTorch composition: SDPA with the causal mask aligned to the last key. Returns
    ``[B, H, T, D]`` laid out as ``[B, T, H, D]``, like the kernel."""
    T, S = q.shape[2], k.shape[2]
    if T == S:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                             enable_gqa=True)
    else:
        visible = torch.arange(S, device=q.device) <= \
            torch.arange(T, device=q.device)[:, None] + (S - T)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale,
                                             enable_gqa=True)
    return out.transpose(1, 2).contiguous().transpose(1, 2)


def _fake(q, k, v, scale=None):
    B, H, T, D = q.shape
    return q.new_empty((B, T, H, D)).transpose(1, 2)


ensure_registered("causal_attention", causal_attention_reference, _fake)


@register_flop_formula(torch.ops.dyrate.causal_attention, get_raw=True)
def _flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    """The products the causal mask leaves (q.k and p.v, 2 FLOPs per multiply-add)."""
    B, H, T, D = q.shape
    S = k.shape[2]
    visible = T * (S - T) + T * (T + 1) // 2
    return 4 * B * H * D * visible


def causal_attention(q, k, v, scale=None):
    """Causal attention of ``q [B, H, T, D]`` over ``k`` / ``v [B, Hkv, S, D]`` (``S >= T``;
    query ``t`` sees keys ``0 .. t + S - T``; GQA: query head ``h`` reads key head
    ``h // (H // Hkv)``), fp32 / bf16 / fp16, any strides with a contiguous head dim. ``scale``
    defaults to ``1 / sqrt(D)``. Returns ``[B, H, T, D]`` in q's dtype, a view of a
    ``[B, T, H, D]`` tensor (the output projection reads it without a copy)."""
    check_causal_attention("causal_attention", q, k, v)
    return torch.ops.dyrate.causal_attention(q, k, v, scale)
