"""The pruning-policy interface: what a policy sees at each step and what it returns.

A policy reads the monitor layer's statistics (``attention_scores`` of the newest token at layer
``monitor_layer``, DESIGN.md) and returns a pruning rate per sequence; the engine turns a rate
into ``n_keep = ceil((1 - rate) * n_visual)`` and prunes layers ``>= monitor_layer + 1``,
monotonically (a lower rate than the current one keeps the current set).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MonitorStats:
    """What the engine hands a policy at step ``step`` (0 is the prefill's last prompt token)."""

    step: int
    vis_scores: torch.Tensor  # fp32 [B, Nv]: head-mean attention of each visual token
    type_mass: torch.Tensor  # fp32 [B, H, 4]: per-head mass on system/image/instruction/response
    n_visual: torch.Tensor  # int64 [B]: visual tokens of each sequence before pruning
    n_kept: torch.Tensor  # int64 [B]: visual tokens still in the pruned layers' cache


class Policy:
    """Base class. ``monitor_layer`` is K-1 (None: never monitor, never prune); with
    ``monitors_decode`` False the policy is asked at the prefill only (no monitor cost later)."""

    monitor_layer: int | None = None
    monitors_decode: bool = True
    name: str = "policy"

    def reset(self, batch_size: int) -> None:
        """Called once per generate call, before the prefill."""

    def check_model(self, text_config) -> None:
        """Raise a clear error if the policy cannot run on this text model (called before any
        work; e.g. a predictor trained for another head count)."""

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        """Pruning rate in [0, 1] per sequence, fp32 ``[B]``, on the stats' device; no host sync."""
        raise NotImplementedError


class Dense(Policy):
    """No pruning: every token stays in every layer. With ``monitor_layer`` set, the monitor still
    runs at every step so the stats record the token-type attention shares of dense decoding
    (the signal of DyRate's Fig. 2); nothing is ever dropped."""

    name = "dense"

    def __init__(self, monitor_layer: int | None = None):
        self.monitor_layer = monitor_layer

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        return torch.zeros(stats.n_visual.shape[0], device=stats.n_visual.device)
