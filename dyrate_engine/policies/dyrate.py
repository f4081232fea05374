"""DyRate (Liang et al., "Dynamic Token Reduction during Generation for Vision Language Models",
arXiv 2501.14204): at every decode step a lightweight predictor reads the monitor layer's
attention distribution over the token types and picks the pruning rate."""
from __future__ import annotations

from typing import Callable

import torch

from .base import MonitorStats, Policy


class DyRate(Policy):
    """``predictor(stats) -> rates [B]`` (fp32, on the stats' device) picks each step's rate;
    the trained :class:`RatePredictor` is one such callable."""

    def __init__(self, predictor: Callable[[MonitorStats], torch.Tensor], layer: int = 3):
        if layer < 1:
            raise ValueError(f"DyRate: layer K must be >= 1, got {layer}")
        self.predictor = predictor
        self.monitor_layer = layer - 1
        self.name = f"dyrate(K={layer})"

    def reset(self, batch_size: int) -> None:
        reset = getattr(self.predictor, "reset", None)
        if reset is not None:
            reset(batch_size)

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        return self.predictor(stats)
