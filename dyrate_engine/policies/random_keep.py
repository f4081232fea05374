"""Random-keep: the baseline that keeps uniformly random visual tokens, which Wen et al. ("Token
Pruning in Multimodal Large Language Models: Are We Solving the Right Problem?", arXiv
2502.11501) found many attention-ranked methods fail to beat. The rates follow a
:class:`~dyrate_engine.policies.schedule.Schedule`, so random-keep and attention-ranked pruning
compare at equal kept tokens and equal FLOPs; only the choice of tokens differs.

The ranking is a hash of ``(seed, visual index)``, not a draw from a generator: it is the same in
a batch and alone, in the dynamic and the static step and under a CUDA graph, and the engine's
monotone pruning keeps nested random subsets as the rate rises. A seed is one random order of
the visual positions, the same for every image; over a set of images whose content sits
anywhere, that is a uniform random choice, and the seed-to-seed spread measures its luck.
"""
from __future__ import annotations

import torch

from .base import MonitorStats
from .schedule import Schedule

_MASK32 = 0xFFFFFFFF


def uniform_hash(index: torch.Tensor, seed: int) -> torch.Tensor:
    """fp32 scores in [0, 1) of int64 ``index``, a fixed pseudo-random function of ``(seed,
    index)`` (MurmurHash3's 32-bit finaliser over the index and the seed combined)."""
    x = (index * 0x9E3779B1 + (seed + 1) * 0x85EBCA77) & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    x = x ^ (x >> 16)
    return (x >> 8).float() / float(1 << 24)  # 24 bits: exact in fp32


class RandomKeep(Schedule):
    """``rates`` and ``prune_layer`` as :class:`Schedule` (K defaults to 3); ``seed`` picks the
    random order of the visual tokens."""

    def __init__(self, rates, prune_layer: int | None = None, *, seed: int = 0):
        super().__init__(rates, prune_layer)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"RandomKeep: seed must be an integer in [0, 2^32), got {seed!r}")
        self.seed = seed
        self.name = self.name.replace("schedule(", "random(", 1)[:-1] + f",seed={seed})"

    def ranking(self, stats: MonitorStats) -> torch.Tensor:
        index = torch.arange(stats.vis_scores.shape[1], device=stats.vis_scores.device)
        return uniform_hash(index, self.seed).expand_as(stats.vis_scores)
