"""Continuous batching: requests join a running batch between decode steps and leave it at the
step they finish (docs/DESIGN.md, serving).

A :class:`Scheduler` owns ``max_batch`` slots over one fixed-capacity cache. Each :meth:`step`
drops cancelled requests, admits waiting ones into free slots, then runs one batched decode step
of every slot. Admission runs the request's prefill alone, on its slot's row of the cache (the
code of a one-request generate call), so a long prompt delays the running requests by one
prefill, and a slot is never held for another request. Rows are independent: each attends its
own length, prunes its own visual tokens under its own policy (all policies of a scheduler share
its first pruned layer K), samples with its own parameters and generator; so an answer equals
the request run alone (greedy exactly, sampled with the same seed). Free slots ride along in the
batched step as inert rows up to the last slot in use; the slots past it are not stepped.

One thread steps the scheduler; :meth:`submit` and :meth:`RequestHandle.cancel` may be called
from others.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass

import torch

from ..models.vision import VisionInputs
from .cache import KVCache
from .handles import QueueFull, Request, RequestHandle
from .prefill import prefill
from .pruning import PruningState
from .requests import make_sequences
from .runner import decode_layers
from .sampling import SamplingParams, sample
from .slots import SlotPruning
from .static_step import DecodeOptions
from .stats import StatsRecorder


@dataclass
class _Slot:
    handle: RequestHandle
    params: SamplingParams
    stop: set[int]
    generator: torch.Generator | None


class Scheduler:
    """Continuous batching over ``max_batch`` slots; see the module docstring. ``capacity``:
    the most tokens (prompt + answer) a request may hold, default the model's ``max_seq_len``;
    ``prune_layer``: the first pruned layer K every pruning policy must use (None: requests
    may not prune); ``max_queue``: the most waiting requests, beyond which :meth:`submit`
    raises :class:`QueueFull`; ``batching="static"`` admits only into an empty batch (every
    request waits for the whole batch before it: the baseline continuous batching beats)."""

    def __init__(self, engine, *, max_batch: int = 8, capacity: int | None = None,
                 prune_layer: int | None = None, max_queue: int = 64,
                 batching: str = "continuous"):
        if batching not in ("continuous", "static"):
            raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
        self.batching = batching
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch}, "
                             f"{max_queue}")
        self.engine, self.model = engine, engine.model
        dec = self.model.decoder
        self.capacity = capacity or self.model.max_seq_len
        if not 1 <= self.capacity <= self.model.max_seq_len:
            raise ValueError(f"capacity must be in [1, {self.model.max_seq_len}] (max_seq_len), "
                             f"got {self.capacity}")
        self.prune_layer = prune_layer
        K = dec.n_layers if prune_layer is None else prune_layer
        if not 1 <= K <= dec.n_layers:
            raise ValueError(f"prune_layer must be in [1, {dec.n_layers - 1}], got {prune_layer}")
        self.max_batch, self.max_queue = max_batch, max_queue
        self.cache = KVCache.allocate(dec.n_layers, max_batch, dec.n_kv_heads, self.capacity,
                                      dec.head_dim, dtype=dec.dtype, device=self.model.device,
                                      prune_layer=K)
        self.pruning = SlotPruning(K, max_batch, self.model.device) if K < dec.n_layers else None
        self.slots: list[_Slot | None] = [None] * max_batch
        self.tokens = torch.zeros(max_batch, dtype=torch.long, device=self.model.device)
        self.free_rows = torch.ones(max_batch, dtype=torch.bool, device=self.model.device)
        # The pruning step covers every slot: the stepped rows' queries, 0 past them (free rows).
        self.monitor_q = torch.zeros(max_batch, dec.n_heads, 1, dec.head_dim, dtype=dec.dtype,
                                     device=self.model.device)
        self.waiting: collections.deque[RequestHandle] = collections.deque()
        self._lock = threading.Lock()
        options: DecodeOptions = engine.options
        options.prepare_packing(dec, max_batch)  # the step's row count never changes

    # ------------------------------------------------------------------------------ requests
    def submit(self, request: Request) -> RequestHandle:
        """Check ``request`` (clear errors before any work) and queue it."""
        policy = request.policy
        if policy is not None and policy.prune_layer is not None:
            self.engine.check_policy(policy)
            if policy.prune_layer != self.prune_layer:
                raise ValueError(f"{policy.name}: this scheduler prunes from layer K = "
                                 f"{self.prune_layer}; a policy must use the same K"
                                 if self.prune_layer is not None else
                                 f"{policy.name}: this scheduler does not prune (no "
                                 f"prune_layer); only policies that never prune are accepted")
        vision = request.vision if isinstance(request.vision, VisionInputs) \
            else VisionInputs(request.vision)
        seq, = make_sequences(self.model, [request.input_ids], vision, request.params)
        if seq.prompt_len + request.params.max_new_tokens > self.capacity:
            raise ValueError(f"{seq.prompt_len} prompt tokens + max_new_tokens "
                             f"{request.params.max_new_tokens} exceed the scheduler's capacity "
                             f"{self.capacity} tokens per request")
        handle = RequestHandle(dataclasses.replace(request, vision=vision), seq)
        handle._tokenizer = self.model.tokenizer
        with self._lock:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue holds its maximum of {self.max_queue} requests")
            self.waiting.append(handle)
        return handle

    @property
    def running(self) -> int:
        return sum(slot is not None for slot in self.slots)

    @property
    def has_work(self) -> bool:
        return self.running > 0 or bool(self.waiting)

    # ---------------------------------------------------------------------------- the loop
    @torch.inference_mode()
    def step(self) -> list[tuple[RequestHandle, int]]:
        """Admit, then decode once: returns the new ``(handle, token)`` pairs."""
        self._drop_cancelled()
        new = self._admit()
        if self.running:
            new += self._decode()
        return new

    @torch.inference_mode()  # the slots' state was made in inference mode; it is edited here
    def reset(self) -> None:
        """Drop every request, running or waiting (after a failed step: nothing is trusted)."""
        with self._lock:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for handle in waiting:
            handle.status = "cancelled"
        for b, slot in enumerate(self.slots):
            if slot is not None:
                self._free(b, "failed")

    def run_until_idle(self) -> None:
        while self.has_work:
            self.step()

    def _drop_cancelled(self) -> None:
        with self._lock:
            for handle in [h for h in self.waiting if h.cancelled]:
                self.waiting.remove(handle)
                handle.status = "cancelled"
        for b, slot in enumerate(self.slots):
            if slot is not None and slot.handle.cancelled:
                self._free(b, "cancelled")

    def _admit(self) -> list[tuple[RequestHandle, int]]:
        new = []
        if self.batching == "static" and self.running:
            return new
        for b in range(self.max_batch):
            if self.slots[b] is not None:
                continue
            with self._lock:
                if not self.waiting:
                    break
                handle = self.waiting.popleft()
            new.append((handle, self._prefill(b, handle)))
            if handle.sequence.finished or handle.request.params.max_new_tokens == 1:
                self._free(b, "finished")
        return new

    def _prefill(self, b: int, handle: RequestHandle) -> int:
        """The request's prefill alone on row ``b``; returns its first token."""
        request, seq, dec = handle.request, handle.sequence, self.model.decoder
        policy, params = request.policy, request.params
        prunes = policy is not None and policy.prune_layer is not None
        if prunes:
            policy.reset(1)
            policy.to(self.model.device)
        row = self.cache.row(b)
        seq.index = 0
        own = PruningState(policy, [seq], self.model.device) if prunes else None
        generator = None if params.seed is None else \
            torch.Generator(device=self.model.device).manual_seed(params.seed)
        start = time.perf_counter()
        logits = prefill(self.model, row, [seq], request.vision, own)
        token = sample(logits, params, generator)
        first = int(token[0])
        StatsRecorder(dec, row, [seq], own).record((time.perf_counter() - start) * 1e3,
                                                   prefill=True)
        self.cache.absorb_row(b, row)
        seq.index = b
        if self.pruning is not None:
            self.pruning.admit(b, seq, policy if prunes else None, own)
        stop = params.stop_tokens(self.model.eos_token_ids)
        self.slots[b] = _Slot(handle, params, stop, generator)
        self.tokens[b] = first
        self.free_rows[b] = False
        handle.status = "running"
        seq.append(first, stop)
        return first

    def _decode(self) -> list[tuple[RequestHandle, int]]:
        """One token for every slot up to the last one in use: layers < K, the monitor and
        pruning, layers >= K."""
        dec, cache = self.model.decoder, self.cache
        K, n = cache.prune_layer, self._rows_to_step()
        start = time.perf_counter()
        h = dec.embed_tokens[self.tokens[:n]][:, None]
        rope = dec.rope(cache.positions[:n, None])
        h, q = decode_layers(dec, cache.rows(0, n), h, range(K), rope)
        if self.pruning is not None and self.pruning.policy.monitors_decode:
            self.monitor_q[:n] = q
            self.monitor_q[n:] = 0
            self.pruning.decode_step(0, self.monitor_q[:, :, 0], cache)
        h, _ = decode_layers(dec, cache.rows(0, n), h, range(K, dec.n_layers), rope)
        cache.advance()
        cache.clear(self.free_rows, [b for b, slot in enumerate(self.slots) if slot is None])
        tokens = self._sample(dec.logits(h[:, 0]))
        host = tokens.tolist()
        self.tokens[:n] = tokens
        elapsed = (time.perf_counter() - start) * 1e3
        active = [(b, slot) for b, slot in enumerate(self.slots) if slot is not None]
        StatsRecorder(dec, cache, [slot.handle.sequence for _, slot in active],
                      self.pruning).record(elapsed, prefill=False)
        new = []
        for b, slot in active:
            seq = slot.handle.sequence
            seq.append(host[b], slot.stop)
            new.append((slot.handle, host[b]))
            if self.pruning is not None:
                self.pruning.row_policies.steps[b] += 1
            if seq.finished or len(seq.token_ids) >= slot.params.max_new_tokens:
                self._free(b, "finished")
        return new

    def _rows_to_step(self) -> int:
        """Continuous batching steps the rows up to the last slot in use (admission fills the
        lowest free slot, so a tail of requests runs on few rows: each row costs a share of
        every matmul). Static batching steps every row until its batch ends, finished ones
        included; their caches are freed, so they read no keys (a batched generate call's
        finished rows read theirs to the end)."""
        if self.batching == "static":
            return self.max_batch
        return 1 + max(b for b, slot in enumerate(self.slots) if slot is not None)

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy rows take the argmax; a sampling row draws alone, with its own generator."""
        tokens = logits.argmax(-1)
        for b, slot in enumerate(self.slots):
            if slot is not None and slot.params.temperature > 0:
                tokens[b] = sample(logits[b:b + 1], slot.params, slot.generator)[0]
        return tokens

    def _free(self, b: int, status: str) -> None:
        slot = self.slots[b]
        self.slots[b] = None
        self.free_rows[b] = True
        self.tokens[b] = 0
        self.cache.clear(self.free_rows, [b])
        if self.pruning is not None:
            self.pruning.free(b)
        slot.handle.status = status
