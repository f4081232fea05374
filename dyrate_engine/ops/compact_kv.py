"""``compact_kv_``: drop visual tokens from the KV cache of every pruned layer, in place.

Pruning removes tokens for real (docs/DESIGN.md, invariants): kept slots move to the front, stable,
and the per-sequence lengths shrink, so later attention reads fewer keys while every tensor keeps
its shape (static shapes for CUDA graphs and torch.compile).
"""
from __future__ import annotations

import torch

from ._library import ensure_registered
from ._slots import current_slots
from ._validate import as_int64, check_compact_kv


def compact_source_slots(lengths, vis_start, present, keep_mask, capacity, vis_slots=None):
    """Slot plan of a compaction: ``(source[B, Cap], new_lengths[B])``.

    Destination slot ``d`` receives source slot ``source[b, d]``: kept slots first, in order,
    then the dropped ones, then the identity from the old length on.
    """
    dropped = present & ~keep_mask
    slot = current_slots(vis_start, present, vis_slots)
    slot_dropped = torch.zeros(present.shape[0], capacity + 1, dtype=torch.bool,
                               device=present.device)  # + a column for the tokens not dropped
    slot_dropped.scatter_(1, torch.where(dropped, slot.clamp(0, capacity), capacity), True)
    slots = torch.arange(capacity, device=present.device)
    slot_kept = (slots < lengths[:, None]) & ~slot_dropped[:, :capacity]
    source = torch.sort((~slot_kept).to(torch.uint8), dim=1, stable=True).indices
    return source, lengths - dropped.sum(1)


def compact_kv_reference(kv, lengths, vis_start, present, keep_mask, vis_slots=None):
    """Readable PyTorch composition of ``compact_kv_`` (also the fallback and the baseline)."""
    L, _, B, hkv, cap, d = kv.shape
    source, new_lengths = compact_source_slots(lengths, vis_start, present, keep_mask, cap,
                                               vis_slots)
    rows = kv.view(L * 2, B, hkv, cap, d)
    batch = torch.arange(B, device=kv.device)[:, None, None]
    head = torch.arange(hkv, device=kv.device)[None, :, None]
    # Advanced indexing moves whole D-vectors (an index per slot, not per element, unlike gather).
    # Past the old length the plan is the identity, so those slots keep their values.
    rows.copy_(rows[:, batch, head, source[:, None, :]])
    lengths.copy_(new_lengths)
    present.logical_and_(keep_mask)


def _fake(kv, lengths, vis_start, present, keep_mask, vis_slots=None):
    return None


ensure_registered("compact_kv_", compact_kv_reference, _fake)


def compact_kv_(
    kv: torch.Tensor,
    lengths: torch.Tensor,
    vis_start: torch.Tensor,
    present: torch.Tensor,
    keep_mask: torch.Tensor,
    *,
    vis_slots: torch.Tensor | None = None,
    validate: bool = True,
) -> None:
    """Remove the present-but-not-kept visual tokens from the cache of every pruned layer.

    The present visual tokens of sequence ``b`` occupy slots ``vis_start[b]`` onwards, in their
    original order, followed by the rest of the sequence up to ``lengths[b]``; with
    ``vis_slots``, each present token sits at its original slot less the visual tokens before it
    that are no longer present (spans with text between them). Every slot after a dropped one
    moves left (kept tokens keep their relative order); slots before the first dropped token are
    not touched. Slots at or past the old length are never written; those between the new and
    the old length hold stale data.

    Args:
        kv: contiguous ``[L, 2, B, Hkv, Cap, D]`` cache of the pruned layers (K and V), any dtype;
            ``kv[l, 0]`` is an SDPA-ready ``[B, Hkv, Cap, D]`` key tensor. Modified in place.
        lengths: contiguous int64 or int32 ``[B]`` (as every index argument), valid slots
            per sequence; reduced in place by the number of dropped tokens.
        vis_start: int64 ``[B]``, slot of the first visual token.
        present: contiguous bool ``[B, Nv]``, visual tokens in the cache; becomes
            ``present & keep_mask`` in place.
        keep_mask: contiguous bool ``[B, Nv]``, a subset of ``present`` (see :func:`select_keep`).
        vis_slots: int64 ``[B, Nv]``, the original slot of each visual token (ascending), for
            visual tokens in several spans; then ``vis_start`` is not read. None: one span.
        validate: check that the visual span (or the ``vis_slots``: strictly increasing, below
            ``lengths``) ends within ``lengths``, ``lengths <= Cap`` and ``keep_mask`` is a
            subset of ``present`` (a device sync on CUDA). Without it the CUDA
            kernel treats ``keep_mask & present`` as kept and clamps every index to the bounds.
    """
    check_compact_kv(kv, lengths, vis_start, present, keep_mask, vis_slots, validate)
    wide = as_int64(lengths)
    torch.ops.dyrate.compact_kv_(kv, wide, as_int64(vis_start), present, keep_mask,
                                 as_int64(vis_slots))
    if wide is not lengths:  # int32 lengths: the caller's tensor gets the new lengths
        lengths.copy_(wide)
