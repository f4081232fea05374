"""The decode step shaped for a GPU: fixed shapes over the fixed-capacity cache, lengths, positions
and kept counts on the device, no host read inside (docs/DESIGN.md, the two decode steps).

Every layer attends over the cache's capacity through ``ops.decode_attention``, which reads only
each sequence's own length (the Triton kernel on CUDA, the C++ one on the CPU); the monitor, the
policy, ``select_keep`` and ``compact_kv_`` run on every monitored step, so a pruning event is
data, not control flow.
That makes the step capturable as one CUDA graph and traceable by ``torch.compile(fullgraph=True)``
(the ops are custom ops with fake kernels). The loop reads back the sampled tokens and the step's
pruning summary together, once per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops
from ..ops.decode_attention import triton_decode_attention, triton_decode_attention_monitor as \
    triton_monitor
from ..models.llama import linear
from ..ops.packed_linear import MKL_PACKING
from .cache import KVCache
from .pruning import PruningState
from .runner import static_decode_layers

ATTENTION = ("auto", "op", "triton")
STEPS = ("auto", "dynamic", "static")
MIN_PACKED_ROWS = 8  # the twelve cpu-vllm layers' linears: 31 vs 43 ms at 8 rows, 21 vs 21 at 1


@dataclass(frozen=True)
class DecodeOptions:
    """How the engine runs its decode step.

    ``step``: ``"dynamic"`` sizes each step's attention on the host (the fastest on the CPU, where
    a host read is free); ``"static"`` is this module's step; ``"auto"`` picks static on CUDA
    and whenever ``compile`` is set, dynamic otherwise. ``attention``: see
    :func:`attention_backend`. ``compile``: run the static step through
    ``torch.compile(fullgraph=True)``, True for inductor or the name of another backend.
    ``cuda_graphs``: capture the static step on CUDA and replay it. ``prepack``: on the CPU,
    multiply fp32 weights through copies packed for MKL at the batch's row count
    (``ops.packed_linear``: faster decode linears on some CPUs, for more copies of the weights).
    ``"auto"`` packs at a call's batch size where MKL can, the step is not compiled, the batch
    has at least ``MIN_PACKED_ROWS`` sequences and the packed copies measured faster on this
    machine (once per batch size), and keeps that one size's copies for the next call; a tuple
    of batch sizes packs those that measured faster once, when the engine is built (like CUDA
    graphs per batch bucket), and keeps them all; ``True`` packs at every batch size, measured
    or not.
    """

    step: str = "auto"
    attention: str = "auto"
    compile: bool | str = False
    cuda_graphs: bool = True
    prepack: bool | str | tuple[int, ...] = "auto"

    def __post_init__(self):
        if self.step not in STEPS:
            raise ValueError(f"decode_step must be one of {', '.join(STEPS)}, got {self.step!r}")
        if self.step == "dynamic" and self.compile:
            raise ValueError("compile=True needs the static decode step (decode_step='static' "
                             "or 'auto'): the dynamic step's shapes change every step")
        attention_backend(self.attention, torch.device("cpu"))
        if isinstance(self.prepack, (list, tuple)):
            if not self.prepack or not all(isinstance(r, int) and not isinstance(r, bool)
                                           and r >= 1 for r in self.prepack):
                raise ValueError(f"prepack batch sizes must be integers >= 1, got "
                                 f"{self.prepack!r}")
            object.__setattr__(self, "prepack", tuple(sorted(set(self.prepack))))
        elif self.prepack not in (True, False, "auto"):
            raise ValueError(f"prepack must be True, False, 'auto' or a tuple of batch sizes, "
                             f"got {self.prepack!r}")
        forced = self.prepack is True or isinstance(self.prepack, tuple)
        if forced and not MKL_PACKING:
            raise ValueError(f"prepack={self.prepack!r} needs a torch build with MKL "
                             "(x86 CPU builds)")
        if forced and self.compile:
            raise ValueError(f"prepack={self.prepack!r} does not combine with compile: "
                             "torch.compile does not trace MKL's packed weights")

    def packs(self, device: torch.device, dtype: torch.dtype, rows: int) -> bool:
        """Whether a generate call of ``rows`` sequences on ``device`` / ``dtype`` packs its
        weights: ``"auto"`` from ``MIN_PACKED_ROWS`` rows, where packing paid for its memory
        (at one row the packed sgemm was no faster than ``F.linear``)."""
        if device.type != "cpu" or dtype != torch.float32 or not MKL_PACKING:
            return False
        if isinstance(self.prepack, tuple):
            return rows in self.prepack
        return self.prepack is True or (self.prepack == "auto" and not self.compile
                                        and rows >= MIN_PACKED_ROWS)

    def prepare_packing(self, dec, rows: int) -> None:
        """Pack ``dec``'s weights for a step of ``rows`` rows where :meth:`packs` says so (kept
        for the next call); otherwise drop ``"auto"`` / ``True`` copies. Sizes packed at load
        (a tuple) are always kept."""
        declared = isinstance(self.prepack, tuple)
        if not self.packs(dec.device, dec.dtype, rows):
            if not declared:
                dec.packed.release()
        elif self.prepack is True:
            dec.packed.pack(dec.linear_weights(), rows=rows)
        else:
            dec.packed.pack_where_faster(dec.linear_weights(), rows, linear, keep_others=declared)

    def static(self, device: torch.device) -> bool:
        if self.step == "auto":
            return device.type == "cuda" or self.compile
        return self.step == "static"


def attention_backend(name: str, device: torch.device) -> str:
    """``"auto"``: the Triton kernels on CUDA when Triton is installed, else ``"op"``, the ops
    through the dispatcher (on the CPU the C++ kernel, or without the extension the reference,
    SDPA with a length mask); ``"triton"`` also on CPU tensors under ``TRITON_INTERPRET=1``."""
    if name not in ATTENTION:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {name!r}")
    if name == "auto":
        return "triton" if device.type == "cuda" and ops.TRITON_AVAILABLE else "op"
    if name == "triton" and not ops.TRITON_AVAILABLE:
        raise ValueError("attention='triton' needs the triton package (pip install triton)")
    return name


class StaticDecodeStep:
    """``step(token [B], step 0-d int64) -> (logits [B, V], summary [B, 6] or None)`` for one
    generate call; ``compile`` runs it through ``torch.compile(fullgraph=True)``; on CUDA with
    ``cuda_graph`` the first call runs eagerly (it warms the kernels up) and captures the
    step, later calls replay it."""

    def __init__(self, model, cache: KVCache, pruning: PruningState | None, *,
                 attention: str = "auto", compile: bool | str = False, cuda_graph: bool = True):
        self.decoder, self.cache, self.pruning = model.decoder, cache, pruning
        triton = attention_backend(attention, model.device) == "triton"
        # Triton on CPU tensors (interpreted) is called directly: the CPU op is the reference.
        self.interpreted = triton and model.device.type != "cuda"
        self.monitoring = pruning is not None and pruning.policy.monitors_decode
        self.monitor = None
        K = cache.prune_layer
        fusable = self.decoder.layers[K - 1].sliding_window is None
        if self.monitoring and triton and fusable:
            self.monitor = pruning.monitor_inputs(cache.capacity)
        self.forward = self._forward
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self.forward = torch.compile(self._forward, fullgraph=True, backend=backend)
        self.use_graph = cuda_graph and model.device.type == "cuda"
        self.graph = None

    def __call__(self, token: torch.Tensor, step: torch.Tensor):
        if not self.use_graph:
            return self.forward(token, step)
        if self.graph is None:
            out = self.forward(token, step)  # eager: compiles the kernels, then capture
            self._capture(token, step)
            return out
        self.inputs[0].copy_(token)
        self.inputs[1].copy_(step)
        self.graph.replay()
        return self.outputs

    def _capture(self, token, step) -> None:
        """Record the step once; capture runs no kernel, so the cache is not advanced twice."""
        self.inputs = (token.clone(), step.clone())
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self.forward(*self.inputs)

    def _forward(self, token: torch.Tensor, step: torch.Tensor):
        dec, cache = self.decoder, self.cache
        K = cache.prune_layer
        h = dec.embed_tokens[token][:, None]
        rope = dec.rope(cache.positions[:, None])
        h, q, found = static_decode_layers(dec, cache, h, range(K), rope, self._attend,
                                           self.monitor)
        summary = None
        if self.monitoring:
            summary = self.pruning.device_step(step, q[:, :, 0], cache, found)
        h, _, _ = static_decode_layers(dec, cache, h, range(K, dec.n_layers), rope, self._attend)
        cache.lengths += 1
        cache.positions += 1
        return dec.logits(h[:, 0]), summary

    def _attend(self, q, k, v, lengths, window, monitor):
        if monitor is not None:
            rank, vis_start, prompt_len, max_vis = monitor
            if self.interpreted:
                return triton_monitor(q, k, v, lengths, rank, vis_start, prompt_len, None, max_vis)
            return ops.decode_attention_monitor(q, k, v, lengths, rank, vis_start, prompt_len,
                                                max_vis=max_vis)
        if self.interpreted:
            return triton_decode_attention(q, k, v, lengths, None, window)
        return ops.decode_attention(q, k, v, lengths, window=window)
