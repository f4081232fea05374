"""DyRate (Liang et al., "Dynamic Token Reduction during Generation for Vision Language Models",
arXiv 2501.14204): at every decode step a lightweight predictor reads the monitor layer's
attention distribution over the token types and picks the pruning rate."""
from __future__ import annotations

from typing import Callable

import torch

from .base import MonitorStats, Policy


class DyRate(Policy):
    """Each step's rate comes from ``predictor``: a trained
    :class:`~dyrate_engine.predictor.RatePredictor` (its hard, argmax rate) or any callable
    ``predictor(stats) -> rates [B]`` (float, on the stats' device). ``layer`` is K, the first
    pruned layer; the monitor layer is K-1."""

    def __init__(self, predictor: Callable[[MonitorStats], torch.Tensor], layer: int = 3,
                 *, meta: dict | None = None):
        if layer < 1:
            raise ValueError(f"DyRate: layer K must be >= 1, got {layer}")
        self.predictor = predictor
        self.monitor_layer = layer - 1
        self.meta = meta  # predictor.json of a loaded artifact, checked against the model
        self.name = f"dyrate(K={layer})"

    @classmethod
    def from_pretrained(cls, path) -> "DyRate":
        """Load an exported predictor directory (``predictor.safetensors`` + ``predictor.json``),
        or ``"demo"`` for the predictor trained for the bundled demo model. The layer K is the
        one it was trained with; the engine checks the model's layer and head counts against it
        before any work."""
        from ..predictor import load_predictor

        from ..demo import DEMO_PREDICTOR, resolve

        predictor, meta = load_predictor(resolve(path, DEMO_PREDICTOR, "predictor.json"))
        return cls(predictor, layer=meta["prune_layer"], meta=meta)

    def check_model(self, text_config) -> None:
        if self.meta is not None:
            from ..predictor.artifact import check_compatible
            check_compatible(self.meta, text_config, f"{self.name}'s predictor")

    def reset(self, batch_size: int) -> None:
        reset = getattr(self.predictor, "reset", None)
        if reset is not None:
            reset(batch_size)

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        predict = getattr(self.predictor, "predict", None)
        return predict(stats) if predict is not None else self.predictor(stats)
