"""``RatePredictor``: DyRate's lightweight classifier (arXiv 2501.14204, Sec. 3.2), a single linear
layer from the attention-distribution features to logits over the candidate pruning rates."""
from __future__ import annotations

import torch
from torch import nn

from .features import FeatureSpec, rate_features

DEFAULT_RATES = (0.0, 0.25, 0.5, 0.75, 0.9)


class RatePredictor(nn.Module):
    """Linear ``features -> logits [..., len(rates)]``; at inference the argmax's rate.

    Args:
        n_heads: attention heads of the monitor layer (the feature width is ``4 * n_heads + 1``).
        rates: candidate pruning rates in [0, 1], ascending (default 0, .25, .5, .75, .9).
        step_scale: see :class:`FeatureSpec`.
    """

    def __init__(self, n_heads: int, rates=DEFAULT_RATES, step_scale: float = 32.0):
        super().__init__()
        rates = tuple(float(r) for r in rates)
        if not rates or any(not 0.0 <= r <= 1.0 for r in rates) or list(rates) != sorted(set(rates)):
            raise ValueError(f"rates must be distinct, ascending and in [0, 1], got {rates}")
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        self.spec = FeatureSpec(n_heads, step_scale)
        self.linear = nn.Linear(self.spec.size, len(rates))
        self.rates = rates  # exact values, for the artifact and stats
        # float64: a float32 0.65 is 0.6499999762, which turned ceil((1 - r) * 20) = 7 into 8 and
        # reported 0.6499999761581421 in the stats.
        self.register_buffer("rate_values", torch.tensor(rates, dtype=torch.float64),
                             persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits over the candidate rates, ``[..., len(rates)]``."""
        return self.linear(features)

    @torch.no_grad()
    def predict(self, type_mass, step=None) -> torch.Tensor:
        """Hard (argmax) rate per sequence from the monitor's ``type_mass [B, H, 4]`` at decode
        ``step`` (an int, or a tensor broadcastable to ``[B]``), or from one object holding both
        (the ``MonitorStats`` a policy sees): float64 ``[B]`` holding the candidate rates
        exactly, on type_mass's device; no host sync. Ties go to the lower rate (``argmax``
        returns the first maximum)."""
        if step is None and hasattr(type_mass, "type_mass"):
            type_mass, step = type_mass.type_mass, type_mass.step
        if step is None:
            raise TypeError("predict() needs the decode step with a type_mass tensor")
        features = rate_features(self.spec, type_mass, step)
        weight = self.linear.weight
        logits = self(features.to(weight.device, weight.dtype))
        return self.rate_values.to(logits.device)[logits.argmax(-1)].to(type_mass.device)
