"""Linears over fp32 weights reordered once into oneDNN's blocked layout, for the prefill's rows.

A prefill multiplies each weight by a whole prompt's rows (hundreds to thousands), where the time
is the sgemm's own. ``at::linear`` hands a plain ``[N, K]`` weight to MKL, which copies it into
its panels on every call; oneDNN's matmul over a weight reordered once (what vLLM's CPU backend
and torch's inductor do for frozen linears) skips that copy. On the 2-core AMD EPYC (AVX2), paired
per round, the prefill of the cpu-vllm shape's 609-token prompts was 1.01-1.12x as fast as through
``at::linear`` at batch 1 and 1.00-1.14x at batch 8 (medians of runs on a noisy VM), with the same
tokens; at LLaVA-7B width, 1.20x for the gate/up matrix and 0.98x for down
(python_bench/RESULTS.md). Unlike :class:`~.packed_linear.PackedWeights`, one copy serves every
row count. The price is memory: the copies are as large as the weights (:attr:`nbytes`).

A copy is a snapshot: it is used only while its weight's version counter is the one it was packed
at, so a weight changed in place (a training step, a load) falls back to ``at::linear`` instead of
multiplying by stale values.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

#: Whether this torch build has oneDNN's packed linear (x86 CPU builds do).
ONEDNN_PACKING = torch.backends.mkldnn.is_available() \
    and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

#: Inputs with more rows than this take the packed copies. At and below it, a decode step's few
#: rows go to ``decode_linear`` (or MKL copies packed for that row count), which read the plain
#: weights at memory bandwidth.
DECODE_ROWS = 64

#: The row count oneDNN is told to expect when it picks the blocked layout: a typical prompt.
LAYOUT_ROWS = 512

if ONEDNN_PACKING:
    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _flops(x_shape, *args, out_shape=None, **kwargs) -> int:
        """As for ``decode_linear``, so FlopCounterMode sees the prefill's packed linears. The
        packet's ``binary`` overload takes ``(x, other, weight, bias, attr, ...)``, the
        ``default`` one ``(x, weight, bias, attr, ...)``: its third argument is the attr string."""
        weight_shape = args[0] if isinstance(args[2], str) else args[1]
        return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


def _version(weight: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; None for an inference tensor, which has none (and
    cannot be changed in place outside inference mode)."""
    try:
        return weight._version
    except RuntimeError:
        return None


class PrefillWeights:
    """oneDNN-packed copies of a decoder's fp32 weights; :meth:`linear` uses one for inputs of
    more than :data:`DECODE_ROWS` rows and falls back to ``fallback`` elsewhere (decode rows,
    autograd, other dtypes and devices, a weight changed since it was packed)."""

    def __init__(self):
        # id(weight) -> (weight, its version when packed, packed copy)
        self._packed: dict[int, tuple[torch.Tensor, int | None, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._packed)

    @property
    def nbytes(self) -> int:
        """The copies' memory: as much as the matrices packed (oneDNN's fp32 blocks carry no
        padding at these widths)."""
        return sum(w.numel() * w.element_size() for w, _, _ in self._packed.values())

    def pack(self, weights) -> None:
        """Pack ``weights`` (fp32 CPU matrices ``[N, K]``), replacing any earlier copies; a
        weight whose copy is current is not packed again."""
        weights = list(weights)
        if not ONEDNN_PACKING:
            raise RuntimeError("prefill packing needs a torch build with oneDNN (mkldnn)")
        bad = [tuple(w.shape) for w in weights
               if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2]
        if bad:
            raise ValueError(f"prefill packing takes fp32 CPU matrices, got shapes {bad[:3]}")
        packed = {}
        with torch.no_grad():
            for w in weights:
                entry = self._packed.get(id(w))
                if entry is None or entry[0] is not w or entry[1] != _version(w):
                    entry = (w, _version(w),
                             torch.ops.mkldnn._reorder_linear_weight(w, LAYOUT_ROWS))
                packed[id(w)] = entry
        self._packed = packed

    def release(self) -> None:
        """Drop every packed copy."""
        self._packed = {}

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias, fallback):
        """``x @ weight.T + bias`` through ``weight``'s packed copy when ``x`` has more than
        :data:`DECODE_ROWS` rows (and needs no gradient, and is not being traced by
        torch.compile, which cannot trace oneDNN's opaque copies); else
        ``fallback(x, weight, bias)``."""
        entry = self._packed.get(id(weight))
        if entry is None or entry[0] is not weight or x.dtype != torch.float32 \
                or torch.compiler.is_compiling() \
                or x.device.type != "cpu" or x.numel() <= DECODE_ROWS * x.shape[-1] \
                or entry[1] != _version(weight) \
                or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
            return fallback(x, weight, bias)
        return torch.ops.mkldnn._linear_pointwise(x, entry[2], bias, "none", [], "")


def fits_in_memory(nbytes: int, share: float = 0.25) -> bool:
    """Whether ``nbytes`` more would take at most ``share`` of the memory the OS reports
    available (``MemAvailable`` in /proc/meminfo); True where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return True
    return nbytes <= share * available
