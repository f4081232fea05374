"""The predictor's input: how the monitor layer's newest query splits its attention between the
four token types, per head, plus where in the answer it is (DyRate, arXiv 2501.14204, Sec. 3.2:
the rate is read off the attention distribution over system / image / instruction / response).

One function serves training (a row per teacher-forced answer position) and inference (a row per
sequence of the batch), so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class FeatureSpec:
    """``n_heads`` x 4 type masses, then ``min(step, step_scale) / step_scale``.

    Why the step: attention drifts from the image to the response as the answer grows (the
    paper's Fig. 2), and the step index tells the predictor how far along that drift it is when
    the masses alone are ambiguous; capped so that long answers stay in the trained range.
    Not included: the current kept fraction. Training scores every answer position on its own
    (non-monotone, see ``dyrate_engine.train``), so that fraction does not exist there, and a
    feature seen only at inference would be a feature the predictor never learned.
    """

    n_heads: int
    step_scale: float = 32.0

    def __post_init__(self):
        if not self.step_scale > 0:  # also refuses NaN
            raise ValueError(f"step_scale must be > 0, got {self.step_scale}")

    @property
    def size(self) -> int:
        return self.n_heads * 4 + 1

    def to_dict(self) -> dict:
        return {**asdict(self), "layout": "type_mass[head, system|image|instruction|response] "
                                          "row-major, then min(step, step_scale) / step_scale"}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(n_heads=int(d["n_heads"]), step_scale=float(d["step_scale"]))


def rate_features(spec: FeatureSpec, type_mass: torch.Tensor, step) -> torch.Tensor:
    """Features ``[..., spec.size]`` from ``type_mass [..., H, 4]`` and ``step`` (an int, or a
    tensor broadcastable to ``type_mass.shape[:-2]``). fp32, on type_mass's device; no host sync."""
    if type_mass.dim() < 2 or type_mass.shape[-1] != 4 or type_mass.shape[-2] != spec.n_heads:
        raise ValueError(f"type_mass must be [..., {spec.n_heads}, 4] for this predictor "
                         f"(trained on a model with {spec.n_heads} attention heads), got "
                         f"{tuple(type_mass.shape)}")
    batch = type_mass.shape[:-2]
    step = torch.as_tensor(step, device=type_mass.device, dtype=torch.float32)
    progress = step.clamp(max=spec.step_scale) / spec.step_scale
    return torch.cat([type_mass.float().reshape(*batch, spec.n_heads * 4),
                      progress.expand(batch)[..., None]], dim=-1)
