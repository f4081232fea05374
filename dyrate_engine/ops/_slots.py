"""Where a sequence's visual tokens sit: the slot tables that ``attention_scores`` and
``compact_kv_`` read when the visual tokens form several spans (images, video frames)."""
from __future__ import annotations

import torch


def visual_slot_table(vis_start, vis_len, vis_slots, width):
    """``[B, width]`` slot of each sequence's r-th visual token (``vis_slots`` when given, else
    the contiguous span from ``vis_start``) and whether the sequence has an r-th visual token."""
    rank = torch.arange(width, device=vis_start.device)
    real = rank < vis_len[:, None]
    if vis_slots is None:
        return vis_start[:, None] + rank, real
    return vis_slots[:, :width], real  # the ops check that the table is at least this wide


def current_slots(vis_start, present, vis_slots=None):
    """``[B, Nv]`` slot that each visual token occupies in the pruned layers' cache now, if it
    is present: its original slot (``vis_slots``, or ``vis_start + r`` for one contiguous span)
    less the visual tokens before it that earlier compactions removed."""
    nv = present.shape[1]
    if vis_slots is None:
        vis_slots = vis_start[:, None] + torch.arange(nv, device=present.device)
    gone_before = torch.cumsum((~present).long(), dim=1) - (~present).long()
    return vis_slots - gone_before


def visual_rank_table(vis_start, vis_len, vis_slots, capacity, width):
    """``[B, capacity]`` rank of the visual token at each slot, -1 at the other slots: the
    inverse of :func:`visual_slot_table` (``width`` columns of it), for kernels that walk slots."""
    slots, real = visual_slot_table(vis_start, vis_len, vis_slots, width)
    rank = torch.arange(width, device=vis_start.device).expand_as(slots)
    table = torch.full((slots.shape[0], capacity + 1), -1, dtype=torch.long,
                       device=vis_start.device)  # + a column where padding ranks land
    table.scatter_(1, torch.where(real, slots.clamp(0, capacity), capacity), rank)
    return table[:, :capacity]
