"""The pruning-policy interface: what a policy sees at each step and what it returns.

A policy reads the monitor layer's statistics (``attention_scores`` of the newest token at layer
``prune_layer - 1``) and returns a pruning rate per sequence; the engine keeps
``n_keep = ceil((1 - rate) * n_visual)`` visual tokens in the layers from ``prune_layer`` on,
monotonically (a rate lower than the current one keeps the current set; docs/DESIGN.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..deprecation import renamed_keyword


@dataclass
class MonitorStats:
    """What the engine hands a policy at step ``step`` (0 is the prefill's last prompt token).
    The static decode step passes ``step`` as a 0-d int64 tensor on the model's device, so a
    policy that runs there computes its rates with tensor ops (no ``int(step)``)."""

    step: int | torch.Tensor
    vis_scores: torch.Tensor  # fp32 [B, Nv]: head-mean attention of each visual token
    type_mass: torch.Tensor  # fp32 [B, H, 4]: per-head mass on system/image/instruction/response
    n_visual: torch.Tensor  # int64 [B]: visual tokens of each sequence before pruning
    n_kept: torch.Tensor  # int64 [B]: visual tokens still in the pruned layers' cache


def n_keep_for(rates: torch.Tensor, n_visual: torch.Tensor) -> torch.Tensor:
    """``ceil((1 - rate) * n_visual)``, in float64 so that e.g. rate 0.75 of 576 keeps 144."""
    rates = rates.double().clamp(0.0, 1.0)
    return torch.ceil((1.0 - rates) * n_visual.double() - 1e-9).long()


class Policy:
    """Base class. ``prune_layer`` is K, the first pruned layer (None: never monitor, never
    prune); the monitor reads layer K-1. With ``monitors_decode`` False the policy is asked at
    the prefill only (no monitor cost later)."""

    prune_layer: int | None = None
    monitors_decode: bool = True
    name: str = "policy"

    @property
    def monitor_layer(self) -> int | None:
        """K-1, the layer whose attention the policy reads (None when it never monitors)."""
        return None if self.prune_layer is None else self.prune_layer - 1

    @monitor_layer.setter
    def monitor_layer(self, layer: int | None) -> None:
        warnings.warn("setting Policy.monitor_layer is deprecated; set prune_layer (K, the "
                      "monitor layer + 1)", DeprecationWarning, stacklevel=2)
        self.prune_layer = None if layer is None else layer + 1

    def __init_subclass__(cls, **kwargs):
        """A subclass written for the old interface names K-1 in a ``monitor_layer`` class
        attribute: it keeps working, with a warning."""
        super().__init_subclass__(**kwargs)
        layer = cls.__dict__.get("monitor_layer")
        if layer is None or isinstance(layer, property):
            return
        warnings.warn(f"{cls.__name__}.monitor_layer = {layer} is deprecated; set prune_layer = "
                      f"{layer + 1} (K, the monitor layer + 1)", DeprecationWarning, stacklevel=2)
        cls.prune_layer = layer + 1
        del cls.monitor_layer

    def reset(self, batch_size: int) -> None:
        """Called once per generate call, before the prefill."""

    def to(self, device: torch.device) -> "Policy":
        """Move what the policy computes with to the model's device (called with ``reset``):
        the static decode step reads nothing from another device, and a CUDA graph cannot."""
        return self

    def check_model(self, text_config) -> None:
        """Raise a clear error if the policy cannot run on this text model (called before any
        work; e.g. a predictor trained for another head count)."""

    def check_family(self, family: str) -> None:
        """Raise a clear error if the policy cannot run on this model family (called before any
        work; e.g. a predictor trained on another family)."""

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        """Pruning rate in [0, 1] per sequence, fp32 ``[B]``, on the stats' device; no host sync."""
        raise NotImplementedError

    def ranking(self, stats: MonitorStats) -> torch.Tensor:
        """The scores ``[B, Nv]`` by which the kept visual tokens are chosen (the highest stay):
        by default the monitor's attention, as FastV and DyRate rank them."""
        return stats.vis_scores


class Dense(Policy):
    """No pruning: every token stays in every layer. With ``prune_layer`` set, the monitor still
    runs at layer ``prune_layer - 1`` at every step so that the stats record the token-type
    attention shares of dense decoding (the signal of DyRate's Fig. 2); nothing is dropped."""

    name = "dense"

    def __init__(self, *, prune_layer: int | None = None, monitor_layer: int | None = None):
        # Keyword-only: the one positional argument used to be monitor_layer (K-1), so a
        # positional call must fail, not silently move the monitor by one layer.
        if monitor_layer is not None and monitor_layer < 0:
            raise ValueError(f"Dense: monitor_layer must be >= 0, got {monitor_layer}")
        old = None if monitor_layer is None else monitor_layer + 1  # the old keyword named K-1
        self.prune_layer = renamed_keyword("Dense", "monitor_layer", "prune_layer", old,
                                           prune_layer, hint=f"{old} (the monitor layer + 1)")
        if self.prune_layer is not None and self.prune_layer < 1:
            raise ValueError(f"Dense: prune_layer K must be >= 1, got {self.prune_layer}")

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        return torch.zeros(stats.n_visual.shape[0], device=stats.n_visual.device)
