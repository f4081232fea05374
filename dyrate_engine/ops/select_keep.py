"""``select_keep``: which visual tokens stay, given their scores (top-k per ragged row).

FastV (arXiv 2403.06764) and DyRate (arXiv 2501.14204) both keep the visual tokens that receive
the most attention; ties go to the lower index so the choice is deterministic on every device.
"""
from __future__ import annotations

import torch

from ._library import ensure_registered
from ._validate import as_int64, check_select_keep


def select_keep_reference(scores, present, n_keep):
    """Readable PyTorch composition of ``select_keep`` (also the fallback and the baseline)."""
    B, nv = scores.shape
    # Lexicographic order (present first, then numbers before NaN, then score descending, then
    # index ascending) from three stable sorts, the least significant key first.
    scores = scores.float()
    nan = torch.isnan(scores)
    order = torch.sort(scores.masked_fill(nan, 0.0), dim=1, descending=True, stable=True).indices
    for key in (~nan, present):
        order = order.gather(1, torch.sort(key.gather(1, order).to(torch.uint8), dim=1,
                                           descending=True, stable=True).indices)
    rank_kept = torch.arange(nv, device=scores.device) < n_keep[:, None]
    return torch.zeros_like(present).scatter(1, order, rank_kept)


def _fake(scores, present, n_keep):
    return torch.empty_like(present, memory_format=torch.contiguous_format)  # as the kernels


ensure_registered("select_keep", select_keep_reference, _fake)


def select_keep(
    scores: torch.Tensor,
    present: torch.Tensor,
    n_keep: torch.Tensor,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Keep exactly ``n_keep[b]`` of the present visual tokens of each row, the highest-scored.

    Args:
        scores: ``[B, Nv]`` fp32/bf16/fp16, e.g. ``vis_scores`` of :func:`attention_scores`.
            Scores of tokens that are not present are ignored; ``-inf`` and ``+inf`` are ordinary
            values; a NaN score of a present token is an error with ``validate``, and without
            it ranks below every number on every device (such a token is dropped first).
        present: bool ``[B, Nv]``, the visual tokens still in the cache of the pruned layers.
        n_keep: int64 or int32 ``[B]``, ``0 <= n_keep[b] <= present[b].sum()``.
        validate: check NaN scores and the range of ``n_keep`` (a device sync on CUDA). Without
            it the CUDA kernel clamps ``n_keep`` (the CPU kernel always checks it).

    Returns:
        bool ``[B, Nv]``, a subset of ``present`` with ``n_keep[b]`` entries per row; among equal
        scores the lower index is kept.
    """
    check_select_keep(scores, present, n_keep, validate)
    return torch.ops.dyrate.select_keep(scores, present, as_int64(n_keep))
