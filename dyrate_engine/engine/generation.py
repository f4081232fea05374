"""One generate call: the batch's sequences, its fixed-capacity cache, the pruning state and the
statistics, and the thin loop that steps them (prefill, then one batched decode step per token)."""
from __future__ import annotations

import time
from typing import Iterator

import torch

from ..models.base import VisionLanguageModel
from ..models.vision import VisionInputs
from ..policies.base import Policy
from .cache import KVCache
from .prefill import prefill
from .pruning import PruningState
from .runner import decode_layers
from .sampling import SamplingParams, sample
from .static_step import DecodeOptions, StaticDecodeStep
from .stats import StatsRecorder


class Generation:
    def __init__(self, model: VisionLanguageModel, sequences, vision: VisionInputs,
                 policy: Policy, params: SamplingParams, prune_layer: int,
                 options: DecodeOptions | None = None):
        dec = model.decoder
        self.model, self.sequences, self.vision, self.params = model, sequences, vision, params
        self.stop = params.stop_tokens(model.eos_token_ids)
        capacity = max(s.prompt_len for s in sequences) + params.max_new_tokens
        self.cache = KVCache.allocate(dec.n_layers, len(sequences), dec.n_kv_heads, capacity,
                                      dec.head_dim, dtype=dec.dtype, device=model.device,
                                      prune_layer=prune_layer)
        windowed = [i for i in range(prune_layer, dec.n_layers)
                    if dec.layers[i].sliding_window is not None
                    and dec.layers[i].sliding_window < capacity]
        if windowed:  # compacted slots are no longer positions: the window would shift
            raise NotImplementedError(f"pruning layers with a sliding window shorter than the "
                                      f"sequence (layers {windowed}) is not supported")
        policy.reset(len(sequences))
        policy.to(model.device)
        self.pruning = PruningState(policy, sequences, model.device, dec.parallel) \
            if prune_layer < dec.n_layers else None
        self.stats = StatsRecorder(dec, self.cache, sequences, self.pruning)
        self.options = options or DecodeOptions()
        self.options.prepare_packing(dec, len(sequences))
        self.static = None
        if self.options.static(model.device):
            self.static = StaticDecodeStep(model, self.cache, self.pruning,
                                           attention=self.options.attention,
                                           compile=self.options.compile,
                                           cuda_graph=self.options.cuda_graphs)
        self.step_index = torch.zeros((), dtype=torch.long, device=model.device)
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=model.device).manual_seed(params.seed)

    @torch.inference_mode()
    def run(self) -> Iterator[list[tuple[int, int]]]:
        """Yields the new ``(sequence index, token)`` pairs after the prefill and each step."""
        start = time.perf_counter()
        logits = prefill(self.model, self.cache, self.sequences, self.vision, self.pruning)
        token = sample(logits, self.params, self.generator)
        host_tokens = token.tolist()  # inside the timer: on CUDA this waits for the device's work
        self.stats.record((time.perf_counter() - start) * 1e3, prefill=True)
        for step in range(1, self.params.max_new_tokens + 1):
            new = self._append(logits, host_tokens)
            yield new
            if step == self.params.max_new_tokens or all(s.finished for s in self.sequences):
                return
            start = time.perf_counter()
            if self.static is None:
                logits = self._decode_step(token, step)
                token = sample(logits, self.params, self.generator)
                host_tokens = token.tolist()
            else:
                logits, token, host_tokens = self._static_step(token, step)
            self.stats.record((time.perf_counter() - start) * 1e3, prefill=False)

    def _append(self, logits: torch.Tensor, tokens: list[int]) -> list[tuple[int, int]]:
        new = []
        for seq in self.sequences:
            if seq.finished:
                continue
            if seq.logits is not None:
                seq.logits.append(logits[seq.index].cpu())
            seq.append(tokens[seq.index], self.stop)
            new.append((seq.index, tokens[seq.index]))
        return new

    def _static_step(self, token: torch.Tensor, step: int):
        """The static step, the sampling, and the one read of the tokens with the step's
        pruning summary; then the host mirrors follow."""
        logits, summary = self.static(token, self.step_index.fill_(step))
        token = sample(logits, self.params, self.generator)
        packed = token.double()[:, None]
        if summary is not None:
            packed = torch.cat([packed, summary], dim=1)
        rows = packed.tolist()
        if summary is not None:
            self.pruning.absorb([row[1:] for row in rows], self.cache)
        self.cache.advance_host()
        return logits, token, [int(row[0]) for row in rows]

    def _decode_step(self, token: torch.Tensor, step: int) -> torch.Tensor:
        """One token for every sequence: layers < K, the monitor and pruning, layers >= K."""
        dec, cache = self.model.decoder, self.cache
        K = cache.prune_layer
        h = dec.embed_tokens[token][:, None]
        rope = dec.rope(cache.positions[:, None])  # pruning moves slots, never positions
        h, q = decode_layers(dec, cache, h, range(K), rope)
        if self.pruning is not None and self.pruning.policy.monitors_decode:
            self.pruning.decode_step(step, q[:, :, 0], cache)
        h, _ = decode_layers(dec, cache, h, range(K, dec.n_layers), rope)
        cache.advance()
        return dec.logits(h[:, 0])
