"""Linears over fp32 weights packed once for MKL's sgemm at a fixed row count.

Every decode step of a generate call multiplies each weight by the same number of rows, one per
sequence. MKL can pack a weight for a row count ahead of time (the packed sgemm that torch's
inductor uses for frozen fp32 linears), and then skips the packing that ``at::linear`` redoes on
every call. On the 2-core development CPU (AVX-512), the twelve layers' linears of the cpu-vllm
benchmark shape took 31 ms packed against 43 ms (``decode_linear``) and 57 ms (``F.linear``) at 8
rows, and 37 ms against 69 / 54 ms at 16 rows (python_bench/RESULTS.md). The price is memory
and time: MKL pads each matrix's packed panels, so the copies of that shape's 365 MB of matrices
took 897 MiB (:attr:`PackedWeights.nbytes`), and packing them took 140-430 ms per row count.
Nor is it faster on every CPU: on a 2-core AMD EPYC (AVX2) the same linears took 74 ms packed
against 31 ms through ``decode_linear`` at 8 rows. :meth:`PackedWeights.pack_where_faster` times
both on the machine it runs on and keeps the packed copies only where they won.
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils.flop_counter import register_flop_formula

#: Whether this torch build has MKL's packed sgemm (x86 CPU builds do).
MKL_PACKING = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")

if MKL_PACKING:
    @register_flop_formula(torch.ops.mkl._mkl_linear)
    def _flops(x_shape, packed_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        """As for ``decode_linear``, so FlopCounterMode sees the packed linears too."""
        return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


class PackedWeights:
    """MKL-packed copies of a decoder's fp32 weights for one or more row counts; :meth:`linear`
    uses one where the rows match and falls back to ``fallback`` elsewhere (prefill, other
    batch sizes, autograd, other dtypes and devices)."""

    def __init__(self):
        # (rows, id(weight)) -> (weight, packed); the weight is kept to check the id's owner
        self._packed: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.nbytes = 0
        self.faster: dict[int, bool] = {}  # row count -> did the packed copies win, measured

    @property
    def row_counts(self) -> list[int]:
        """The row counts with packed copies."""
        return sorted({rows for rows, _ in self._packed})

    def pack(self, weights, rows: int, keep_others: bool = False) -> None:
        """Pack ``weights`` (fp32 CPU matrices ``[N, K]``) for ``rows`` rows. The copies of other
        row counts are freed first unless ``keep_others``. A no-op where they are packed."""
        weights = list(weights)
        if not MKL_PACKING or rows < 1:
            raise RuntimeError("MKL packing needs a torch build with MKL and rows >= 1")
        bad = [tuple(w.shape) for w in weights
               if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2]
        if bad:
            raise ValueError(f"MKL packing takes fp32 CPU matrices, got shapes {bad[:3]}")
        if not keep_others:
            ids = {id(w) for w in weights}
            self._keep(lambda key: key[0] == rows and key[1] in ids)
        for w in weights:
            if self._packed.get((rows, id(w)), (None,))[0] is not w:
                self._packed[(rows, id(w))] = (w, torch.ops.mkl._mkl_reorder_linear_weight(w, rows))
        self.nbytes = sum(p.numel() * p.element_size() for _, p in self._packed.values())

    def pack_where_faster(self, weights, rows: int, unpacked, keep_others: bool = False) -> bool:
        """:meth:`pack`, kept only if the packed copies multiply ``rows`` rows faster than
        ``unpacked(x, weight, bias)`` on this machine; measured at a row count's first pack
        (:func:`packed_is_faster`) and remembered in :attr:`faster`. Returns whether ``rows``
        is packed."""
        weights = list(weights)
        if self.faster.get(rows) is False:
            if not keep_others:
                self.release()
            return False
        self.pack(weights, rows, keep_others)
        if rows not in self.faster:
            self.faster[rows] = packed_is_faster(self, weights, rows, unpacked)
            if not self.faster[rows]:
                self._keep(lambda key: key[0] != rows)
        return self.faster[rows]

    def _keep(self, wanted) -> None:
        """Drop the copies whose ``(rows, id(weight))`` key is not ``wanted``."""
        self._packed = {key: v for key, v in self._packed.items() if wanted(key)}
        self.nbytes = sum(p.numel() * p.element_size() for _, p in self._packed.values())

    def release(self) -> None:
        """Drop every packed copy."""
        self._packed, self.nbytes = {}, 0

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias, fallback):
        """``x @ weight.T + bias`` through the packed copy of ``weight`` for ``x``'s row count
        (when it needs no gradient); else ``fallback(x, weight, bias)``."""
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        entry = self._packed.get((rows, id(weight)))
        if entry is None or entry[0] is not weight or x.dtype != torch.float32 \
                or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            return fallback(x, weight, bias)
        return torch.ops.mkl._mkl_linear(x, entry[1], weight, bias, rows)


def packed_is_faster(packed: PackedWeights, weights, rows: int, unpacked, repeats: int = 3) -> bool:
    """Whether one pass over ``weights`` at ``rows`` random rows runs faster through
    ``packed``'s copies than through ``unpacked``: medians of ``repeats`` passes each after one
    warm-up, the two interleaved so that a slow spell of the machine hits both. A pass reads
    every matrix once, as a decode step does, so the weights come from memory, not the cache."""
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    paths = {"packed": lambda x, w: packed.linear(x, w, None, unpacked),
             "unpacked": lambda x, w: unpacked(x, w, None)}
    times = {name: [] for name in paths}
    with torch.inference_mode():
        for i in range(repeats + 1):
            for name, path in paths.items():
                start = time.perf_counter()
                for w in weights:
                    path(inputs[w.shape[1]], w)
                if i:  # the first pass warms up
                    times[name].append(time.perf_counter() - start)
    return statistics.median(times["packed"]) < statistics.median(times["unpacked"])
