"""The pruning state of a scheduler's slots: :class:`PruningState` over a fixed number of rows,
where a request takes a row at admission and gives it back when it ends, and every row has its
own policy and its own step count.

A row's policy is asked exactly what it is asked when its request runs alone: its own row of the
monitor's outputs (as wide as its own visual tokens), its own step, at the steps its policy
monitors. The selection and the compaction then run once for every row; a row whose count does
not change keeps every token, unmoved. Rows are padded to the widest request so far; the visual
slots are always given as a table (one span is one run of it).
"""
from __future__ import annotations

import torch

from ..policies.base import MonitorStats, Policy
from .cache import KVCache
from .pruning import PruningState
from .sequence import Sequence


class RowPolicies(Policy):
    """Each row's own policy (None: a free row, or one that never prunes), asked on its row."""

    def __init__(self, prune_layer: int, rows: int):
        self.prune_layer = prune_layer
        self.policies: list[Policy | None] = [None] * rows
        self.steps = [0] * rows  # each row's next decode step, its policy's ``step``
        self.widths = [0] * rows  # each row's visual tokens
        self.name = "per-row"

    def asked(self, b: int) -> bool:
        policy = self.policies[b]
        return policy is not None and policy.prune_layer is not None and policy.monitors_decode

    @property
    def monitors_decode(self) -> bool:
        return any(self.asked(b) for b in range(len(self.policies)))

    def _row(self, stats: MonitorStats, b: int) -> MonitorStats:
        n = self.widths[b]
        return MonitorStats(self.steps[b], stats.vis_scores[b:b + 1, :n], stats.type_mass[b:b + 1],
                            stats.n_visual[b:b + 1], stats.n_kept[b:b + 1])

    def rates(self, stats: MonitorStats) -> torch.Tensor:
        """Rate 0 (keep what is kept) for the rows not asked."""
        rates = torch.zeros(len(self.policies), device=stats.n_visual.device)
        for b in range(len(self.policies)):
            if self.asked(b):
                rates[b] = self.policies[b].rates(self._row(stats, b))[0]
        return rates

    def ranking(self, stats: MonitorStats) -> torch.Tensor:
        """Each asked row's own policy's ranking (the others keep every token they hold, so
        their ranking is not read)."""
        own = [b for b in range(len(self.policies)) if self.asked(b)
               and type(self.policies[b]).ranking is not Policy.ranking]
        if not own:  # every asked row ranks by the attention: no copy in the step
            return stats.vis_scores
        ranking = stats.vis_scores.clone()
        for b in own:
            ranking[b, :self.widths[b]] = self.policies[b].ranking(self._row(stats, b))[0]
        return ranking


class SlotPruning(PruningState):
    """:class:`PruningState` for ``rows`` slots, all free at first."""

    def __init__(self, prune_layer: int, rows: int, device, max_visual: int = 1):
        self.policy = self.row_policies = RowPolicies(prune_layer, rows)
        self.device = device
        self.max_visual = max(1, max_visual)
        zeros = torch.zeros(rows, dtype=torch.long, device=device)
        self.vis_start, self.n_visual, self.prompt_len = zeros.clone(), zeros.clone(), zeros.clone()
        self.vis_slots = torch.zeros(rows, self.max_visual, dtype=torch.long, device=device)
        self.present = torch.zeros(rows, self.max_visual, dtype=torch.bool, device=device)
        self.n_kept = [0] * rows
        self.last_rates = [0.0] * rows
        self.last_type_mass: list[list[float]] = [[0.0] * 4 for _ in range(rows)]

    def _widen(self, width: int) -> None:
        """Room for ``width`` visual tokens per row (between steps: nothing holds the old ones)."""
        grow = width - self.max_visual
        self.vis_slots = torch.nn.functional.pad(self.vis_slots, (0, grow))
        self.present = torch.nn.functional.pad(self.present, (0, grow))
        self.max_visual = width

    def admit(self, b: int, seq: Sequence, policy: Policy | None,
              prefilled: PruningState | None) -> None:
        """Row ``b`` is ``seq``'s, with the state its own prefill left in ``prefilled`` (None
        when its policy never prunes: every visual token stays)."""
        layout, n = seq.layout, seq.layout.n_visual
        if n > self.max_visual:
            self._widen(n)
        self.vis_start[b], self.n_visual[b], self.prompt_len[b] = \
            layout.vis_start, n, seq.prompt_len
        self.vis_slots[b] = 0
        self.vis_slots[b, :n] = torch.tensor(layout.slots(), dtype=torch.long)
        self.present[b] = False
        if prefilled is None:
            self.present[b, :n] = True
            self.n_kept[b], self.last_rates[b], self.last_type_mass[b] = n, 0.0, [0.0] * 4
        else:
            self.present[b, :n] = prefilled.present[0, :n]
            self.n_kept[b] = prefilled.n_kept[0]
            self.last_rates[b] = prefilled.last_rates[0]
            self.last_type_mass[b] = prefilled.last_type_mass[0]
        rows = self.row_policies
        rows.policies[b], rows.steps[b], rows.widths[b] = policy, 1, n  # next: decode step 1

    def free(self, b: int) -> None:
        self.row_policies.policies[b] = None
        self.row_policies.widths[b] = self.n_kept[b] = 0
        self.n_visual[b] = self.prompt_len[b] = self.vis_start[b] = 0
        self.present[b] = False

    def decode_step(self, step: int, q, cache: KVCache) -> None:
        """:meth:`PruningState.decode_step` for the rows whose policy monitors the decode; the
        others keep their statistics from the step their policy last saw."""
        kept = [(b, self.last_rates[b], self.last_type_mass[b])
                for b in range(len(self.n_kept)) if not self.row_policies.asked(b)]
        super().decode_step(step, q, cache)
        for b, rate, mass in kept:
            self.last_rates[b], self.last_type_mass[b] = rate, mass
