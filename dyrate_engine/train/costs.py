"""What a pruning choice costs, per answer row and candidate rate: the penalty term of the
predictor's loss (DyRate, arXiv 2501.14204, Sec. 3.3, penalises the FLOPs ratio).

``"flops"``: the FLOPs of the whole generation (the prefill and every decode step) from the
engine's exact count (``models.flops``). ``"kv"``: the keys and values each decode step reads.
On a long answer the two disagree on what a per-step rate is worth: a decode step's FLOPs are
mostly its linears, which no pruning touches, so dropping visual tokens after the prefill saves
few FLOPs, while the step's time at a serving batch is mostly its reads of the cache (the
bandwidth-bound decode of ``python_bench/RESULTS.md``), which the dropped tokens leave. Under
``"kv"`` the prefill's own choice costs nothing: it is what the first decode steps then read."""
from __future__ import annotations

import torch

from ..models import flops
from ..policies.base import n_keep_for
from .examples import TeacherBatch

COSTS = ("flops", "kv")


def cost_table(cost: str, dec, batch: TeacherBatch, K: int, rates
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(table [B, T, R], dense [B, T])``: each answer row's cost under each candidate rate,
    and without pruning (zero outside the answer rows). Row ``P-1`` is the prefill (layers >= K
    on the kept tokens), row ``P-1+s`` decode step ``s`` over the kept keys."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    B, T = batch.input_ids.shape
    L = dec.n_layers
    table = torch.zeros(B, T, len(rates), dtype=torch.float64)
    for b in range(B):
        P, n_visual, A = (int(x[b]) for x in (batch.prompt_len, batch.n_visual, batch.answer_len))
        dropped = [n_visual - int(n)
                   for n in n_keep_for(torch.tensor(rates), torch.tensor(n_visual))]
        for s in range(A):
            for r, d in enumerate(dropped):
                if cost == "kv":  # keys read by step s (its own included); the prefill reads none
                    table[b, P - 1 + s, r] = 0 if s == 0 else flops.kv_read_tokens(
                        L, K, P + s, P + s - d)
                elif s == 0:
                    table[b, P - 1, r] = flops.prefill_flops(dec, [P] * K + [P - d] * (L - K))
                else:
                    table[b, P - 1 + s, r] = flops.decode_flops(dec, [P + s] * K
                                                                + [P + s - d] * (L - K))
    return table.to(batch.input_ids.device), table[..., 0].to(batch.input_ids.device)


def flops_table(dec, batch: TeacherBatch, K: int, rates) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cost_table` of ``"flops"``."""
    return cost_table("flops", dec, batch, K, rates)
