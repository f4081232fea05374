"""Triton kernels of ``decode_attention`` and ``decode_attention_monitor``: one query per sequence
against the first ``lengths[b]`` slots of a fixed-capacity cache.

One program per (sequence, key head) serves the head's whole GQA group, so each key and value is
read once per group (the FlashDecoding layout without the split over keys: at the batch sizes
where a split pays, B x Hkv programs already fill the device). The loop stops at the sequence's own
length, so a compacted (pruned) sequence reads fewer keys, with no mask tensor. With ``MONITOR``
the same pass keeps, per head, the online-softmax mass of each token type and writes the scaled
logit of each visual key, which the caller turns into probabilities with the pass's log-sum-exp:
DyRate's monitor (arXiv 2501.14204, Sec. 3) then costs no second read of the keys.
Runs compiled on CUDA and, under ``TRITON_INTERPRET=1``, on CPU tensors (the tests).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _rescaled_sum(total, alpha, p, selected):
    """An online-softmax running sum of the probabilities ``p [G, N]`` of the selected keys."""
    return total * alpha + tl.sum(tl.where(selected[None, :], p, 0.0), axis=1)


@triton.jit
def _store_masses(Mass, system, image, instruction, response, denom, mask):
    tl.store(Mass + 0, system / denom, mask=mask)
    tl.store(Mass + 1, image / denom, mask=mask)
    tl.store(Mass + 2, instruction / denom, mask=mask)
    tl.store(Mass + 3, response / denom, mask=mask)


@triton.jit
def _decode_attention_kernel(
    Q, K, V, Out, Lengths, VisualRank, VisStart, PromptLen, Logits, Lse, Mass, sq_b, sq_h,
    sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, sr_b, sl_b, sl_h, scale, window,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
    BLOCK_N: tl.constexpr, MONITOR: tl.constexpr, WINDOW: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    kh = tl.program_id(1).to(tl.int64)
    length = tl.load(Lengths + b).to(tl.int64)
    start = 0
    if WINDOW:
        start = tl.maximum(length - window, 0)
    offs_g, offs_d = tl.arange(0, GP), tl.arange(0, DP)
    g_ok, d_ok = offs_g < G, offs_d < D
    heads = kh * G + offs_g
    q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + offs_d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    m = tl.full([GP], float("-inf"), tl.float32)
    denom = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DP], tl.float32)
    mass_sys = tl.zeros([GP], tl.float32)
    mass_img, mass_ins, mass_res = mass_sys, mass_sys, mass_sys
    if MONITOR:
        vis_start = tl.load(VisStart + b)
        prompt_len = tl.load(PromptLen + b)
    for n0 in range(start, length, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < length
        kv_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * sk_b + kh * sk_h + offs_n[:, None] * sk_n + offs_d[None, :],
                    mask=kv_ok, other=0.0).to(tl.float32)
        s = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale  # [GP, BLOCK_N]
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        v = tl.load(V + b * sv_b + kh * sv_h + offs_n[:, None] * sv_n + offs_d[None, :],
                    mask=kv_ok, other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        if MONITOR:
            rank = tl.load(VisualRank + b * sr_b + offs_n, mask=n_ok, other=-1)
            image = rank >= 0
            system = (offs_n < vis_start) & ~image
            instruction = (offs_n < prompt_len) & ~image & ~system
            mass_sys = _rescaled_sum(mass_sys, alpha, p, system)
            mass_img = _rescaled_sum(mass_img, alpha, p, image)
            mass_ins = _rescaled_sum(mass_ins, alpha, p, instruction)
            mass_res = _rescaled_sum(mass_res, alpha, p, ~image & ~system & ~instruction)
            tl.store(Logits + b * sl_b + heads[:, None] * sl_h + rank[None, :], s,
                     mask=g_ok[:, None] & (image & n_ok)[None, :])
        m = m_new
    safe = tl.where(denom > 0, denom, 1.0)  # length 0: no key, output and masses 0
    out = acc / safe[:, None]
    tl.store(Out + b * so_b + heads[:, None] * so_h + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])
    if MONITOR:
        row = b * tl.num_programs(1) * G + heads  # Lse [B, H] and Mass [B, H, 4], contiguous
        tl.store(Lse + row, tl.where(denom > 0, m + tl.log(safe), float("-inf")), mask=g_ok)
        _store_masses(Mass + row * 4, mass_sys, mass_img, mass_ins, mass_res, safe, g_ok)


def _block_n(head_dim: int, group: int) -> int:
    """Keys per loop iteration: the [group, keys, head_dim] product stays within ~16K fp32."""
    budget = 16384 // (max(triton.next_power_of_2(group), 1) * triton.next_power_of_2(head_dim))
    return int(min(64, max(16, triton.next_power_of_2(max(budget, 1)))))


def launch(q, k_cache, v_cache, lengths, out, scale, window, monitor=None):
    """Run the kernel: ``out [B, H, D]`` is written; with ``monitor = (visual_rank, vis_start,
    prompt_len, logits, lse, mass)`` also those (``logits`` prefilled with ``-inf``)."""
    B, H, D = q.shape
    Hkv = k_cache.shape[1]
    G = H // Hkv
    if monitor is None:
        dummy = lengths
        rank, vis_start, prompt_len, logits, lse, mass = dummy, dummy, dummy, out, out, out
        sr_b = sl_b = sl_h = 0
    else:
        rank, vis_start, prompt_len, logits, lse, mass = monitor
        sr_b, sl_b, sl_h = rank.stride(0), logits.stride(0), logits.stride(1)
    grid = (B, Hkv)
    _decode_attention_kernel[grid](
        q, k_cache, v_cache, out, lengths, rank, vis_start, prompt_len, logits, lse, mass,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        sr_b, sl_b, sl_h, float(scale), int(window or 0),
        G=G, GP=max(triton.next_power_of_2(G), 2), D=D, DP=max(triton.next_power_of_2(D), 16),
        BLOCK_N=_block_n(D, G), MONITOR=monitor is not None, WINDOW=window is not None,
    )
