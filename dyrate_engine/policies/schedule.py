"""Fixed pruning-rate schedule, the baseline for DyRate's dynamic rates (arXiv 2501.14204): the
rate of step ``t`` (0 = prefill) is ``rates[min(t, len(rates) - 1)]``. The engine applies rates
monotonically, so a later lower rate keeps the tokens already kept."""
from __future__ import annotations

import torch

from ..deprecation import renamed_keyword
from .base import MonitorStats, Policy


class Schedule(Policy):
    """``rates``: one rate, or the rate of each step from the prefill on; ``prune_layer`` K
    defaults to 3."""

    def __init__(self, rates, prune_layer: int | None = None, *, layer: int | None = None):
        prune_layer = renamed_keyword("Schedule", "layer", "prune_layer", layer, prune_layer,
                                      default=3)
        rates = [float(r) for r in ([rates] if isinstance(rates, (int, float)) else rates)]
        if not rates or any(not 0 <= r <= 1 for r in rates):
            raise ValueError(f"Schedule: rates must be a non-empty list in [0, 1], got {rates}")
        if prune_layer < 1:
            raise ValueError(f"Schedule: prune_layer K must be >= 1, got {prune_layer}")
        self.rate_list = rates
        self._tables: dict[torch.device, torch.Tensor] = {}
        self.prune_layer = prune_layer
        # One rate for every step: nothing changes after the prefill, so skip the decode monitor.
        self.monitors_decode = len(rates) > 1
        self.name = f"schedule(K={prune_layer},{','.join(f'{r:g}' for r in rates)})"

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        batch, device = stats.n_visual.shape[0], stats.n_visual.device
        if not isinstance(stats.step, torch.Tensor):
            rate = self.rate_list[min(stats.step, len(self.rate_list) - 1)]
            return torch.full((batch,), rate, device=device)
        # A device step (the static decode step): index a table kept on the device, so that
        # the step reads nothing from the host and a CUDA graph copies nothing into it.
        table = self._tables.get(device)
        if table is None:
            table = self._tables[device] = torch.tensor(self.rate_list, device=device)
        return table[stats.step.clamp(max=len(self.rate_list) - 1).reshape(1)].expand(batch)
