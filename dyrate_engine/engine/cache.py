"""The KV cache: one allocation of fixed capacity for the whole batch (DESIGN.md, invariants).

Layers ``< prune_from`` keep every token; layers ``>= prune_from`` may be compacted by
``compact_kv_``, so the two groups have their own per-sequence lengths. RoPE is applied before
caching, and ``positions`` counts every token a sequence has seen, so a compacted key keeps its
rotation and the next token's position is the original count, not the compacted length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DENSE, PRUNED = 0, 1


@dataclass
class KVCache:
    kv: torch.Tensor  # [L, 2, B, Hkv, Cap, hd]; kv[l, 0] keys, kv[l, 1] values
    lengths: torch.Tensor  # int64 [2, B]: slots used by the dense and by the pruned layers
    positions: torch.Tensor  # int64 [B]: position of each sequence's next token
    prune_from: int  # first pruned layer K; n_layers when nothing is pruned

    @classmethod
    def allocate(cls, n_layers, batch, n_kv_heads, capacity, head_dim, *, dtype, device,
                 prune_from=None) -> "KVCache":
        prune_from = n_layers if prune_from is None else prune_from
        if not 1 <= prune_from <= n_layers:
            raise ValueError(f"prune_from must be in [1, {n_layers}], got {prune_from}")
        kv = torch.zeros(n_layers, 2, batch, n_kv_heads, capacity, head_dim, dtype=dtype,
                         device=device)
        zeros = torch.zeros(2, batch, dtype=torch.long, device=device)
        return cls(kv, zeros, zeros[0].clone(), prune_from)

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    @property
    def pruned_kv(self) -> torch.Tensor:
        """``[L - K, 2, B, Hkv, Cap, hd]`` contiguous view of the pruned layers (for compact_kv_)."""
        return self.kv[self.prune_from:]

    def group(self, layer: int) -> int:
        return DENSE if layer < self.prune_from else PRUNED

    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()
