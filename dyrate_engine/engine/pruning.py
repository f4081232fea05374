"""Pruning state of a batch: which visual tokens are still in the pruned layers' cache, and the
monitor -> policy -> select -> compact step (docs/DESIGN.md, data flow and invariants).

Pruning is monotone: a rate lower than the current one keeps the current set. In the dynamic step
the kept counts are mirrored on the host (one read per monitored step, of the counts with the
step's statistics) because the host sizes the pruned layers' attention window and launches no
compaction when no count changes; the static step (``device_step``) selects and compacts every
monitored step on the device and the host learns the counts with the sampled tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops
from ..models.layout import slot_table
from ..policies.base import MonitorStats, Policy, n_keep_for
from .cache import PRUNED, KVCache


@dataclass
class MonitorOutput:
    """What the monitor found at one step, and what the policy asked for."""

    ranking: torch.Tensor  # fp32 [B, max_visual]: the policy's ranking, what select_keep reads
    n_keep: torch.Tensor  # int64 [B] (device): the policy's counts, never above the current ones
    counts: list[int]  # the same counts on the host


@dataclass
class Selection:
    keep: torch.Tensor  # bool [B, max_visual]: the visual tokens that stay
    counts: list[int]  # kept visual tokens per sequence (host)


class PruningState:
    #: The decoder's TensorParallel (None: one process); each rank's monitor sees only its heads.
    parallel = None

    def __init__(self, policy: Policy, sequences, device, parallel=None):
        self.policy = policy
        self.parallel = parallel
        layouts = [s.layout for s in sequences]
        n_visual = [layout.n_visual for layout in layouts]
        self.max_visual = max(n_visual)
        self.vis_start = torch.tensor([layout.vis_start for layout in layouts], device=device)
        # Several runs of visual tokens in some sequence: the ops read their slots from a table;
        # otherwise the contiguous-span path, which needs none.
        several = any(len(layout.spans) > 1 for layout in layouts)
        self.vis_slots = slot_table(layouts, device)[0] if several else None
        self.n_visual = torch.tensor(n_visual, device=device)
        self.prompt_len = torch.tensor([s.prompt_len for s in sequences], device=device)
        rank = torch.arange(self.max_visual, device=device)
        self.present = rank[None, :] < self.n_visual[:, None]
        self.n_kept = list(n_visual)  # host mirror
        self.last_rates = [0.0] * len(n_visual)
        self.last_type_mass: list[list[float]] = [[0.0] * 4 for _ in n_visual]

    def monitor(self, step, q, k_cache, lengths) -> MonitorOutput:
        """Scores and type masses of the newest token ``q [B, H, hd]`` at the monitor layer,
        whose keys are the first ``lengths`` slots of ``k_cache``, and the policy's counts."""
        found = self._combined(self._scores(q, k_cache, lengths))
        ranking, wanted, summary = self._ask_policy(step, found,
                                                    torch.tensor(self.n_kept, device=q.device))
        # One read for the host's needs: the counts (to size and skip work) and the statistics.
        return MonitorOutput(ranking, wanted, self._read_summary(summary.tolist()))

    def _scores(self, q, k_cache, lengths):
        return ops.attention_scores(
            q, k_cache, lengths, self.vis_start, self.n_visual, self.prompt_len,
            max_vis=self.max_visual, vis_slots=self.vis_slots, validate=False)

    def _combined(self, found):
        """Under tensor parallelism, the monitor's outputs over every rank's heads, so that all
        ranks ask the policy the same and keep the same tokens."""
        return found if self.parallel is None else self.parallel.combine_monitor(*found)

    def _ask_policy(self, step, found, n_kept):
        """The policy's ranking ``[B, max_visual]``, its counts ``[B]`` (never above
        ``n_kept``) and the step's summary ``[B, 6]`` float64: kept count, rate, the 4
        head-mean type masses."""
        vis_scores, type_mass = found
        stats = MonitorStats(step, vis_scores, type_mass, self.n_visual, n_kept)
        rates = self.policy.rates(stats)
        wanted = torch.minimum(n_keep_for(rates, self.n_visual), n_kept)
        return self.policy.ranking(stats), wanted, torch.cat(
            [wanted.double()[:, None], rates.double()[:, None], type_mass.double().mean(1)], dim=1)

    def _read_summary(self, rows: list[list[float]]) -> list[int]:
        """Keep a summary's statistics (as read on the host); returns its counts."""
        self.last_rates = [row[1] for row in rows]
        self.last_type_mass = [list(row[2:]) for row in rows]
        return [int(row[0]) for row in rows]

    def _dropped(self, cache: KVCache, counts: list[int]) -> None:
        cache.dropped([old - new for old, new in zip(self.n_kept, counts)])
        self.n_kept = counts

    def select(self, found: MonitorOutput) -> Selection | None:
        """The keep mask for the asked counts, or None when no count changes (nothing to launch)."""
        if found.counts == self.n_kept:
            return None
        keep = ops.select_keep(found.ranking, self.present, found.n_keep, validate=False)
        return Selection(keep, found.counts)

    def compact(self, cache: KVCache, selection: Selection) -> None:
        """Drop the unkept tokens from the pruned layers' cache, in place."""
        ops.compact_kv_(cache.pruned_kv, cache.lengths[PRUNED], self.vis_start, self.present,
                        selection.keep, vis_slots=self.vis_slots, validate=False)
        self._dropped(cache, selection.counts)

    def keep_at_prefill(self, selection: Selection) -> None:
        """Record a selection applied at prefill (the pruned layers never saw the dropped ones)."""
        self.present = selection.keep
        self.n_kept = selection.counts

    def decode_step(self, step: int, q, cache: KVCache) -> None:
        """Monitor the newest tokens ``q [B, H, hd]`` at layer K-1 (just written, not yet
        counted in the cache's lengths) and compact if the policy asks for fewer tokens."""
        K = cache.prune_layer
        found = self.monitor(step, q, cache.kv[K - 1, 0], cache.lengths[0] + 1)
        selection = self.select(found)
        if selection is not None:
            self.compact(cache, selection)

    # ---------------------------------------------------------- the static (graph-safe) step
    def monitor_inputs(self, capacity: int):
        """What the fused monitor attention reads besides the cache: ``(visual_rank [B, Cap],
        vis_start, prompt_len, max_visual)``; the monitor layer is never compacted, so these
        hold for the whole generation."""
        rank = ops.visual_rank_table(self.vis_start, self.n_visual, self.vis_slots, capacity,
                                     self.max_visual)
        return rank, self.vis_start, self.prompt_len, self.max_visual

    def device_step(self, step: torch.Tensor, q, cache: KVCache, found=None) -> torch.Tensor:
        """:meth:`decode_step` with no host read and no data-dependent shape, so it can run in
        a CUDA graph or under torch.compile: the selection and the compaction run every
        monitored step (a row whose count does not change keeps every token and is not moved).
        ``step``: a 0-d int64 device tensor; ``found``: ``(vis_scores, type_mass)`` when the
        monitor layer's attention already produced them. Returns the step's summary
        ``[B, 6]`` float64 (kept count, rate, the 4 head-mean type masses) for :meth:`absorb`."""
        if found is None:
            found = self._scores(q, cache.kv[cache.prune_layer - 1, 0], cache.lengths[0] + 1)
        found = self._combined(found)
        ranking, wanted, summary = self._ask_policy(step, found, self.present.sum(1))
        keep = ops.select_keep(ranking, self.present, wanted, validate=False)
        ops.compact_kv_(cache.pruned_kv, cache.lengths[PRUNED], self.vis_start, self.present,
                        keep, vis_slots=self.vis_slots, validate=False)
        return summary

    def absorb(self, summary: list[list[float]], cache: KVCache) -> None:
        """The host's side of :meth:`device_step`, from its summary as read with the tokens."""
        self._dropped(cache, self._read_summary(summary))
