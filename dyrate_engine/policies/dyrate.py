"""DyRate (Liang et al., "Dynamic Token Reduction during Generation for Vision Language Models",
arXiv 2501.14204): at every decode step a lightweight predictor reads the monitor layer's
attention distribution over the token types and picks the pruning rate."""
from __future__ import annotations

from typing import Callable

import torch

from ..bundled import resolve_predictor
from ..predictor import RatePredictor, check_compatible, check_family, load_predictor
from ..deprecation import renamed_keyword
from .base import MonitorStats, Policy


class DyRate(Policy):
    """Each step's rate comes from ``predictor``: a trained :class:`RatePredictor` (its hard,
    argmax rate) or any callable ``predictor(stats) -> rates [B]`` (float, on the stats'
    device). ``prune_layer`` is K, the first pruned layer (default 3); the monitor layer is
    K-1."""

    def __init__(self, predictor: RatePredictor | Callable[[MonitorStats], torch.Tensor],
                 prune_layer: int | None = None, *, meta: dict | None = None, layer: int | None = None):
        prune_layer = renamed_keyword("DyRate", "layer", "prune_layer", layer, prune_layer,
                                      default=3)
        if prune_layer < 1:
            raise ValueError(f"DyRate: prune_layer K must be >= 1, got {prune_layer}")
        self.predictor = predictor
        self.prune_layer = prune_layer
        self.meta = meta  # predictor.json of a loaded artifact, checked against the model
        self.source: str | None = None  # its directory, set by from_pretrained
        self.name = f"dyrate(K={prune_layer})"

    @classmethod
    def from_pretrained(cls, path) -> "DyRate":
        """Load an exported predictor directory (``predictor.safetensors`` + ``predictor.json``),
        or ``"demo"`` for the predictor trained for the bundled demo model. K is the layer it
        was trained with; the engine checks the model's layer and head counts against it
        before any work."""
        directory = resolve_predictor(path)
        predictor, meta = load_predictor(directory)
        policy = cls(predictor, prune_layer=meta["prune_layer"], meta=meta)
        policy.source = str(directory)
        return policy

    def check_model(self, text_config) -> None:
        if self.meta is not None:
            check_compatible(self.meta, text_config, f"{self.name}'s predictor")

    def check_family(self, family: str) -> None:
        if self.meta is not None:
            check_family(self.meta, family, f"{self.name}'s predictor")

    def to(self, device: torch.device) -> "DyRate":
        """A trained predictor (a module) moves to the model's device, in place."""
        if isinstance(self.predictor, torch.nn.Module):
            self.predictor.to(device)
        return self

    def reset(self, batch_size: int) -> None:
        reset = getattr(self.predictor, "reset", None)
        if reset is not None:
            reset(batch_size)

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        # Anything with a predict(stats) (a RatePredictor, also when compiled) is asked through
        # it; any other callable is called with the stats.
        predict = getattr(self.predictor, "predict", None)
        return predict(stats) if predict is not None else self.predictor(stats)
