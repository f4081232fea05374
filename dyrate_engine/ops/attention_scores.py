"""``attention_scores``: the monitor layer's view of one query per sequence.

DyRate (arXiv 2501.14204, Sec. 3) reads, at every decode step, how the newest token's attention is
split between the four token types, and ranks visual tokens by the attention they receive (the
FastV criterion, arXiv 2403.06764). Both come from one pass over the monitor layer's keys.

A sequence's visual tokens form one contiguous span (``vis_start``, ``vis_len``), or, with several
images or video frames, any ascending set of slots given by ``vis_slots``.
"""
from __future__ import annotations

import math

import torch

from ._library import ensure_registered
from ._slots import visual_slot_table
from ._validate import as_int64, check_attention_scores

#: Token-type index of ``type_mass[..., t]``.
SYSTEM, IMAGE, INSTRUCTION, RESPONSE = range(4)


def attention_scores_reference(q, k_cache, lengths, vis_start, vis_len, prompt_len, scale, max_vis,
                               vis_slots=None):
    """Readable PyTorch composition of ``attention_scores`` (also the fallback and the baseline)."""
    B, H, D = q.shape
    Hkv, cap = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q_grouped = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = torch.matmul(q_grouped, k_cache.float().transpose(-1, -2)) * scale  # [B, Hkv, G, Cap]
    slot = torch.arange(cap, device=q.device)
    valid = slot < lengths[:, None]  # [B, Cap]
    logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).reshape(B, H, cap)
    probs = torch.where(valid[:, None, :], probs, 0.0)  # an empty row is all -inf: NaN -> 0
    vis_slot, real = visual_slot_table(vis_start, vis_len, vis_slots, max_vis)
    visual = torch.zeros(B, cap + 1, dtype=torch.bool, device=q.device)  # + a slot for padding
    visual.scatter_(1, torch.where(real, vis_slot.clamp(0, cap), cap), True)
    # system before the first visual slot, instruction the rest of the prompt, response after it
    token_type = torch.where(slot < vis_start[:, None], SYSTEM,
                             torch.where(slot < prompt_len[:, None], INSTRUCTION, RESPONSE))
    token_type = torch.where(visual[:, :cap], IMAGE, token_type)
    one_hot = torch.nn.functional.one_hot(token_type, 4).to(probs.dtype)  # [B, Cap, 4]
    type_mass = torch.bmm(probs, one_hot)
    if cap == 0:
        vis_scores = torch.zeros(B, max_vis, device=q.device)
    else:
        vis_scores = probs.mean(dim=1).gather(1, vis_slot.clamp(0, cap - 1)) * real
    return vis_scores, type_mass


def _fake(q, k_cache, lengths, vis_start, vis_len, prompt_len, scale, max_vis, vis_slots=None):
    B, H, _ = q.shape
    return q.new_empty((B, max_vis), dtype=torch.float32), q.new_empty((B, H, 4), dtype=torch.float32)


ensure_registered("attention_scores", attention_scores_reference, _fake)


def attention_scores(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    lengths: torch.Tensor,
    vis_start: torch.Tensor,
    vis_len: torch.Tensor,
    prompt_len: torch.Tensor,
    scale: float | None = None,
    *,
    max_vis: int | None = None,
    vis_slots: torch.Tensor | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one query per sequence, summarised per visual token and per token type.

    Slot ``s`` of sequence ``b`` is a *system* token for ``s < vis_start[b]``, an *image* token for
    ``vis_start[b] <= s < vis_start[b] + vis_len[b]`` (or, with ``vis_slots``, for the slots it
    lists), an *instruction* token for any other slot below ``prompt_len[b]`` and a *response*
    token up to ``lengths[b]``. The query attends to every slot
    below ``lengths[b]`` (the newest token's own key included), as at the monitor layer, which is
    never pruned.

    Args:
        q: ``[B, H, D]`` query of the newest token, fp32/bf16/fp16, head dim contiguous.
        k_cache: ``[B, Hkv, Cap, D]`` keys (RoPE applied), same float dtypes, any strides with a
            contiguous head dim. ``H`` must be a multiple of ``Hkv`` (grouped-query attention:
            query head ``h`` reads key head ``h // (H // Hkv)``).
        lengths: int64 or int32 ``[B]`` (as every index argument), valid slots per sequence,
            ``prompt_len <= lengths <= Cap``.
        vis_start, vis_len: int64 ``[B]``, the visual span of each sequence.
        prompt_len: int64 ``[B]``, ``vis_start + vis_len <= prompt_len``.
        scale: softmax scale; ``1 / sqrt(D)`` when None.
        max_vis: width of ``vis_scores``; ``max(vis_len)`` when None, which reads ``vis_len`` on
            the host (a device sync on CUDA; pass it in a decode loop).
        vis_slots: int64 ``[B, W]``, ``W >= max_vis``: the slot of each sequence's r-th visual
            token, for visual tokens in several spans (images, video frames) with text between;
            strictly increasing below ``vis_len[b]``, starting at ``vis_start[b]`` and ending
            before ``prompt_len[b]``; later entries are not read. ``vis_start <= prompt_len``
            even without visual tokens. None: one contiguous span.
        validate: check index values (a device sync on CUDA). Without it the CUDA kernel clamps
            every index to the tensor bounds instead of raising.

    Returns:
        ``vis_scores``: fp32 ``[B, max_vis]``, the head-mean softmax probability of each visual
        token, 0 past ``vis_len[b]``. ``type_mass``: fp32 ``[B, H, 4]``, each head's probability
        mass on system / image / instruction / response; rows sum to 1 (0 for ``lengths[b] == 0``).
    """
    if max_vis is None:
        max_vis = int(vis_len.max()) if vis_len.numel() else 0
    check_attention_scores(q, k_cache, lengths, vis_start, vis_len, prompt_len, max_vis, vis_slots,
                           validate)
    return torch.ops.dyrate.attention_scores(
        q, k_cache, as_int64(lengths), as_int64(vis_start), as_int64(vis_len),
        as_int64(prompt_len), scale, max_vis, as_int64(vis_slots))
