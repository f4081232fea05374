"""The KV cache: one allocation of fixed capacity for the whole batch (docs/DESIGN.md, invariants).

Layers ``< prune_layer`` keep every token; layers ``>= prune_layer`` may be compacted by
``compact_kv_``, so the two groups have their own per-sequence lengths. RoPE is applied before
caching, and ``positions`` holds each sequence's next RoPE position (the count of tokens it has
seen, or under M-RoPE what the model's adapter says), so a compacted key keeps its rotation and
the next token's position does not depend on the compacted length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DENSE, PRUNED = 0, 1


@dataclass
class HostLengths:
    """The host's copy of ``KVCache.lengths``, one list per layer group. The cache keeps it in
    step with the device, so that the host sizes attention windows and counts FLOPs without
    reading the device."""

    dense: list[int]
    pruned: list[int]

    def of(self, b: int) -> tuple[int, int]:
        return self.dense[b], self.pruned[b]


@dataclass
class KVCache:
    kv: torch.Tensor  # [L, 2, B, Hkv, Cap, hd]; kv[l, 0] keys, kv[l, 1] values
    lengths: torch.Tensor  # int64 [2, B]: slots used by the dense and by the pruned layers
    positions: torch.Tensor  # int64 [B]: RoPE position of each sequence's next token
    prune_layer: int  # K, the first pruned layer; n_layers when nothing is pruned
    host: HostLengths

    @classmethod
    def allocate(cls, n_layers, batch, n_kv_heads, capacity, head_dim, *, dtype, device,
                 prune_layer=None) -> "KVCache":
        prune_layer = n_layers if prune_layer is None else prune_layer
        if not 1 <= prune_layer <= n_layers:
            raise ValueError(f"prune_layer must be in [1, {n_layers}], got {prune_layer}")
        kv = torch.zeros(n_layers, 2, batch, n_kv_heads, capacity, head_dim, dtype=dtype,
                         device=device)
        zeros = torch.zeros(2, batch, dtype=torch.long, device=device)
        return cls(kv, zeros, zeros[0].clone(), prune_layer, HostLengths([0] * batch, [0] * batch))

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    @property
    def pruned_kv(self) -> torch.Tensor:
        """``[L - K, 2, B, Hkv, Cap, hd]`` contiguous view of the pruned layers (for compact_kv_)."""
        return self.kv[self.prune_layer:]

    def group(self, layer: int) -> int:
        return DENSE if layer < self.prune_layer else PRUNED

    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def max_lengths(self) -> tuple[int, int]:
        """The longest sequence of each group (host), which bounds the slots attention reads."""
        return max(self.host.dense), max(self.host.pruned)

    def start(self, b: int, prompt_len: int, next_position: int | None = None) -> None:
        """Sequence ``b`` holds its prompt in every layer; its next token goes at RoPE position
        ``next_position`` (default: the prompt length)."""
        self.lengths[:, b] = prompt_len
        self.positions[b] = prompt_len if next_position is None else next_position
        self.host.dense[b] = self.host.pruned[b] = prompt_len

    def set_pruned_lengths(self, lengths: list[int]) -> None:
        """The pruned layers hold ``lengths`` slots (a prefill that ran them on kept tokens)."""
        self.lengths[PRUNED] = torch.tensor(lengths, device=self.lengths.device)
        self.host.pruned = list(lengths)

    def dropped(self, counts: list[int]) -> None:
        """``compact_kv_`` removed ``counts[b]`` slots of each sequence from the pruned layers
        (it shrank the device lengths itself)."""
        self.host.pruned = [n - d for n, d in zip(self.host.pruned, counts)]

    def rows(self, start: int, stop: int) -> "KVCache":
        """Sequences ``start .. stop - 1`` as a cache over the same memory: writes go through
        to this cache. Its host lengths are a copy (:meth:`absorb_row` brings one back). Its
        ``pruned_kv`` is not contiguous unless it covers every row, so compaction runs on the
        whole cache."""
        return KVCache(self.kv[:, :, start:stop], self.lengths[:, start:stop],
                       self.positions[start:stop], self.prune_layer,
                       HostLengths(self.host.dense[start:stop], self.host.pruned[start:stop]))

    def row(self, b: int) -> "KVCache":
        """Sequence ``b`` as a one-sequence cache over the same memory (a request's prefill in
        a scheduler slot writes through it)."""
        return self.rows(b, b + 1)

    def absorb_row(self, b: int, row: "KVCache") -> None:
        self.host.dense[b], self.host.pruned[b] = row.host.of(0)

    def clear(self, rows: torch.Tensor, host_rows: list[int]) -> None:
        """Rows ``rows`` (a bool ``[B]`` device mask, the same rows as ``host_rows``) hold
        nothing: a scheduler's free slots, which still ride along in the batched step."""
        self.lengths.masked_fill_(rows, 0)
        self.positions.masked_fill_(rows, 0)
        for b in host_rows:
            self.host.dense[b] = self.host.pruned[b] = 0

    def advance(self) -> None:
        """Every sequence wrote one more token in every layer."""
        self.lengths += 1
        self.positions += 1
        self.advance_host()

    def advance_host(self) -> None:
        """The host's half of :meth:`advance` (the static step advances on the device)."""
        self.host.dense = [n + 1 for n in self.host.dense]
        self.host.pruned = [n + 1 for n in self.host.pruned]
