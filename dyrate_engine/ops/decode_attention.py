"""``decode_attention``: one query per sequence against its own ``lengths[b]`` keys of a
fixed-capacity cache, and ``decode_attention_monitor``, the same with ``attention_scores``'
outputs from the same pass.

The decode step of a GPU keeps every tensor at the cache's capacity (static shapes for CUDA graphs
and torch.compile) while each sequence, after pruning, holds fewer keys: these ops read only a
sequence's own length (the Triton and C++ kernels stop there; the reference masks the rest for
SDPA). RoPE is applied before caching, as everywhere in the engine, because compaction decouples
slots from positions.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from ._library import ensure_registered
from ._validate import as_int64, check_decode_attention
from .attention_scores import IMAGE, INSTRUCTION, RESPONSE, SYSTEM

#: Whether the Triton kernels can serve CUDA tensors.
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def _visible(lengths, capacity, window):
    slot = torch.arange(capacity, device=lengths.device)
    visible = slot < lengths[:, None]
    if window is not None:
        visible &= slot >= lengths[:, None] - window
    return visible


def decode_attention_reference(q, k_cache, v_cache, lengths, scale=None, window=None):
    """Readable PyTorch composition (SDPA with a length mask); the CPU implementation where the
    C++ extension is not built."""
    visible = _visible(lengths, k_cache.shape[2], window)
    out = F.scaled_dot_product_attention(q[:, :, None], k_cache, v_cache,
                                         attn_mask=visible[:, None, None, :], scale=scale,
                                         enable_gqa=True)[:, :, 0]
    return torch.where((lengths > 0)[:, None, None], out, 0.0)  # no key: 0, not NaN


def decode_attention_monitor_reference(q, k_cache, v_cache, lengths, visual_rank, vis_start,
                                       prompt_len, scale, max_vis):
    """Readable PyTorch composition of ``decode_attention_monitor``."""
    B, H, D = q.shape
    Hkv, cap = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = decode_attention_reference(q, k_cache, v_cache, lengths, scale)
    logits = torch.matmul(q.float().reshape(B, Hkv, H // Hkv, D),
                          k_cache.float().transpose(-1, -2)).reshape(B, H, cap) * scale
    valid = _visible(lengths, cap, None)
    probs = torch.softmax(logits.masked_fill(~valid[:, None], float("-inf")), dim=-1)
    probs = torch.where(valid[:, None], probs, 0.0)
    slot = torch.arange(cap, device=q.device)
    token_type = torch.where(slot < vis_start[:, None], SYSTEM,
                             torch.where(slot < prompt_len[:, None], INSTRUCTION, RESPONSE))
    token_type = torch.where(visual_rank >= 0, IMAGE, token_type)
    type_mass = torch.bmm(probs, F.one_hot(token_type, 4).float())
    column = torch.where(visual_rank >= 0, visual_rank, max_vis).clamp(max=max_vis)
    vis_scores = torch.zeros(B, max_vis + 1, device=q.device)  # + a column for the non-visual
    vis_scores.scatter_add_(1, column, probs.mean(1))
    return out, vis_scores[:, :max_vis].contiguous(), type_mass


def triton_decode_attention(q, k_cache, v_cache, lengths, scale=None, window=None):
    """The Triton kernel itself, bypassing the dispatcher (which serves CPU tensors with the
    C++ kernel or the reference): on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``. No
    argument checks."""
    from .triton.decode_attention import launch
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    launch(q, k_cache, v_cache, lengths, out, _scale(q, scale), window)
    return out


def triton_decode_attention_monitor(q, k_cache, v_cache, lengths, visual_rank, vis_start,
                                    prompt_len, scale, max_vis):
    """The fused monitor's Triton kernel itself (see :func:`triton_decode_attention`)."""
    from .triton.decode_attention import launch
    B, H, _ = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    logits = torch.full((B, H, max_vis), float("-inf"), device=q.device)
    lse = torch.empty(B, H, device=q.device)
    type_mass = torch.empty(B, H, 4, device=q.device)
    launch(q, k_cache, v_cache, lengths, out, _scale(q, scale), None,
           (visual_rank, vis_start, prompt_len, logits, lse, type_mass))
    # The pass's log-sum-exp turns each visual key's logit into its probability; a sequence
    # without keys has lse = -inf and every score 0 (a NaN head stays NaN, as in the reference).
    lse = lse[:, :, None]
    probs = torch.where(lse == float("-inf"), 0.0, torch.exp(logits - lse))
    return out, probs.mean(1), type_mass


def _scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _fake_attention(q, k_cache, v_cache, lengths, scale=None, window=None):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def _fake_monitor(q, k_cache, v_cache, lengths, visual_rank, vis_start, prompt_len, scale,
                  max_vis):
    B, H, _ = q.shape
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty((B, max_vis), dtype=torch.float32),
            q.new_empty((B, H, 4), dtype=torch.float32))


ensure_registered("decode_attention", decode_attention_reference, _fake_attention,
                  cuda=triton_decode_attention if TRITON_AVAILABLE else None)
ensure_registered("decode_attention_monitor", decode_attention_monitor_reference, _fake_monitor,
                  cuda=triton_decode_attention_monitor if TRITON_AVAILABLE else None)


@register_flop_formula(
    [torch.ops.dyrate.decode_attention, torch.ops.dyrate.decode_attention_monitor], get_raw=True)
def _flops(q, k_cache, v_cache, lengths, *args, out_val=None, **kwargs) -> int:
    """The keys each query reads, as SDPA's formula counts them (q.k and p.v, 2 FLOPs per
    multiply-add), so FlopCounterMode sees the decode step's attention. It reads ``lengths``:
    a host sync, under the counter only."""
    window = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    keys = lengths.clamp(max=window) if window is not None else lengths
    return 4 * q.shape[1] * q.shape[2] * int(keys.sum())


def decode_attention(q, k_cache, v_cache, lengths, scale=None, *, window=None):
    """Attention of ``q [B, H, D]`` over slots ``[max(0, lengths[b] - window), lengths[b])`` of
    ``k_cache`` / ``v_cache [B, Hkv, Cap, D]`` (GQA: query head ``h`` reads key head
    ``h // (H // Hkv)``), fp32 / bf16 / fp16, head dim contiguous; ``lengths`` int64 or int32
    ``[B]`` on the data's device, ``<= Cap``, read on the device only (no host sync). ``scale``
    defaults to ``1 / sqrt(D)``. Returns ``[B, H, D]`` in q's dtype, 0 for ``lengths[b] == 0``."""
    check_decode_attention("decode_attention", q, k_cache, v_cache, lengths, window=window)
    return torch.ops.dyrate.decode_attention(q, k_cache, v_cache, as_int64(lengths), scale, window)


def decode_attention_monitor(q, k_cache, v_cache, lengths, visual_rank, vis_start, prompt_len,
                             scale=None, *, max_vis):
    """:func:`decode_attention` (no window) and :func:`attention_scores`' two outputs in one
    pass over the keys. ``visual_rank``: int64 or int32 ``[B, Cap]``, the rank of the visual
    token at each slot or -1 (``visual_rank_table`` builds it; below ``max_vis``); ``vis_start``
    and ``prompt_len`` int64 or int32 ``[B]`` split the other slots into system / instruction /
    response as in ``attention_scores``. Returns ``(out [B, H, D], vis_scores fp32 [B, max_vis],
    type_mass fp32 [B, H, 4])``."""
    check_decode_attention("decode_attention_monitor", q, k_cache, v_cache, lengths, visual_rank,
                           (vis_start, prompt_len))
    return torch.ops.dyrate.decode_attention_monitor(
        q, k_cache, v_cache, as_int64(lengths), as_int64(visual_rank), as_int64(vis_start),
        as_int64(prompt_len), scale, max_vis)
