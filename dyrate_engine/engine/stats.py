"""Per-request statistics of a generate call, one entry per step (step 0 is the prefill)."""
from __future__ import annotations

from ..models import flops
from ..models.llama import LlamaDecoder
from .cache import KVCache
from .pruning import PruningState


class StatsRecorder:
    """Fills each sequence's :class:`GenerationStats` from the cache's host lengths, the pruning
    state and the step's wall time; finished sequences take no more entries."""

    def __init__(self, decoder: LlamaDecoder, cache: KVCache, sequences,
                 pruning: PruningState | None):
        self.decoder, self.cache, self.sequences, self.pruning = decoder, cache, sequences, pruning

    def record(self, elapsed_ms: float, *, prefill: bool) -> None:
        L, K = self.decoder.n_layers, self.cache.prune_layer
        count = flops.prefill_flops if prefill else flops.decode_flops
        for seq in self.sequences:
            if seq.finished:
                continue
            s, b = seq.stats, seq.index
            if prefill:
                s.prefill_ms = elapsed_ms
            else:
                s.step_ms.append(elapsed_ms)
            dense, pruned = self.cache.host.of(b)
            s.cache_lengths.append((dense, pruned))
            s.flops.append(count(self.decoder, [dense] * K + [pruned] * (L - K)))
            s.dense_flops.append(count(self.decoder, [dense] * L))
            p = self.pruning
            s.kept_visual.append(p.n_kept[b] if p else s.n_visual)
            s.rates.append(p.last_rates[b] if p else 0.0)
            s.type_mass.append(p.last_type_mass[b] if p else [])
