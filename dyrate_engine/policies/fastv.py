"""FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", arXiv 2403.06764).

Prunes once, at the prefill: from layer K (``prune_layer``) on, drop the ``ratio`` of visual tokens
that receive the least head-mean attention from the last prompt token at layer K-1, as FastV's
public code ranks them; the kept set then stays for the whole answer.
"""
from __future__ import annotations

import torch

from ..deprecation import renamed_keyword
from .base import MonitorStats, Policy


class FastV(Policy):
    """``prune_layer`` K defaults to 2 and ``ratio`` to 0.5, FastV's published setting."""

    monitors_decode = False

    def __init__(self, prune_layer: int | None = None, ratio: float = 0.5, *,
                 layer: int | None = None):
        prune_layer = renamed_keyword("FastV", "layer", "prune_layer", layer, prune_layer,
                                      default=2)
        if prune_layer < 1:
            raise ValueError(f"FastV: prune_layer K must be >= 1, got {prune_layer}")
        if not 0 <= ratio <= 1:
            raise ValueError(f"FastV: ratio must be in [0, 1], got {ratio}")
        self.prune_layer = prune_layer
        self.ratio = ratio
        self.name = f"fastv(K={prune_layer},R={ratio:g})"

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        return torch.full((stats.n_visual.shape[0],), self.ratio, device=stats.n_visual.device)
