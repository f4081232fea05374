"""Pruning state of a batch: which visual tokens are still in the pruned layers' cache, and the
monitor -> policy -> select -> compact step (DESIGN.md, data flow and invariants).

Pruning is monotone: a rate lower than the current one keeps the current set. The kept counts are
mirrored on the host (one read of B ints per monitored step) because the host sizes the pruned
layers' attention window and must launch no compaction when no count changes.
"""
from __future__ import annotations

import torch

from .. import ops
from ..policies.base import MonitorStats, Policy
from .cache import PRUNED, KVCache


def n_keep_for(rates: torch.Tensor, n_visual: torch.Tensor) -> torch.Tensor:
    """``ceil((1 - rate) * n_visual)``, in float64 so that e.g. rate 0.75 of 576 keeps 144."""
    rates = rates.double().clamp(0.0, 1.0)
    return torch.ceil((1.0 - rates) * n_visual.double() - 1e-9).long()


class PruningState:
    def __init__(self, policy: Policy, vis_start, n_visual, prompt_lens, device):
        self.policy = policy
        self.monitor_layer = policy.monitor_layer
        self.max_vis = max(n_visual)
        self.vis_start = torch.tensor(vis_start, device=device)
        self.n_visual = torch.tensor(n_visual, device=device)
        self.prompt_len = torch.tensor(prompt_lens, device=device)
        rank = torch.arange(self.max_vis, device=device)
        self.present = rank[None, :] < self.n_visual[:, None]
        self.n_kept = list(n_visual)  # host mirror
        self.last_rates = [0.0] * len(n_visual)
        self.last_type_mass: list[list[float]] = [[0.0] * 4 for _ in n_visual]

    def monitor(self, step, q, k_cache, lengths) -> torch.Tensor:
        """Scores and type masses of the newest token at the monitor layer; returns the new
        ``n_keep [B]`` (device) asked for by the policy, never above the current counts."""
        vis_scores, type_mass = ops.attention_scores(
            q, k_cache, lengths, self.vis_start, self.n_visual, self.prompt_len,
            max_vis=self.max_vis, validate=False)
        stats = MonitorStats(step, vis_scores, type_mass, self.n_visual,
                             torch.tensor(self.n_kept, device=q.device))
        rates = self.policy.rates(stats)
        wanted = torch.minimum(n_keep_for(rates, self.n_visual), stats.n_kept)
        self._scores = vis_scores
        summary = torch.cat([rates.double()[:, None], type_mass.double().mean(1)], dim=1).cpu()
        self.last_rates = summary[:, 0].tolist()
        self.last_type_mass = summary[:, 1:].tolist()
        return wanted

    def select(self, n_keep: torch.Tensor) -> tuple[torch.Tensor, list[int]] | None:
        """The keep mask for ``n_keep``, or None when no count changes (nothing to launch)."""
        counts = n_keep.tolist()
        if counts == self.n_kept:
            return None
        keep = ops.select_keep(self._scores, self.present, n_keep, validate=False)
        return keep, counts

    def compact(self, cache: KVCache, keep, counts) -> list[int]:
        """Drop the unkept tokens from the pruned layers; returns tokens dropped per sequence."""
        ops.compact_kv_(cache.pruned_kv, cache.lengths[PRUNED], self.vis_start, self.present,
                        keep, validate=False)
        dropped = [old - new for old, new in zip(self.n_kept, counts)]
        self.n_kept = counts
        return dropped

    def prefill_keep(self, keep: torch.Tensor, counts: list[int]) -> None:
        """Record a selection applied at prefill (the pruned layers never saw the dropped ones)."""
        self.present = keep
        self.n_kept = counts


def validate_policy(policy: Policy, n_layers: int) -> int:
    """The first pruned layer K for ``policy`` (``n_layers`` when it never prunes)."""
    if policy.monitor_layer is None:
        return n_layers
    if not 0 <= policy.monitor_layer <= n_layers - 2:
        raise ValueError(f"{policy.name}: the monitor layer K-1 = {policy.monitor_layer} must be "
                         f"in [0, {n_layers - 2}] so that at least one layer is pruned "
                         f"(the model has {n_layers} layers)")
    return policy.monitor_layer + 1

