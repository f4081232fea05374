"""End-to-end benchmark: transformers ``generate`` and the engine under each policy, same weights.

The contenders (``hf``, and the engine under Dense, FastV, Schedule, DyRate) run interleaved:
``--warmup`` rounds at the smallest batch in which each makes 2 tokens, then ``--repeats`` timed
rounds that go round the batch sizes, in which each makes ``--new-tokens``, in a new seeded order
each round (interleaving spreads a noisy neighbour's bursts over every contender and batch instead
of one; shuffling keeps a contender's place in the round from becoming a bias). Each round starts
with a measure of the copy bandwidth, the ceiling for that round's calls. Per call (``runners``):
prefill ms (call start to first token), median decode step ms, decode tokens/s = B / median
step, end-to-end tokens/s = B x N / wall time, peak memory, and the achieved fraction of the
bandwidth floor: per decode step, floor = (weight bytes + bytes of KV that step reads) / the
round's copy bandwidth, fraction = floor / step time, median over the steps. Each row reports
every metric's median, min and max over the repeats; the ratios to Dense and to HF are paired by
round (a contender's tokens/s over the baseline's in the same round), which cancels the drift of
a shared machine between rounds.
FLOPs, KV bytes and kept visual tokens are deterministic (exact counts from the engine).
"""
from __future__ import annotations

import random
import statistics
import sys

import torch
from tqdm import tqdm

from ..engine.static_step import MIN_PACKED_ROWS
from ..models.flops import kv_read_tokens
from ..ops.packed_linear import MKL_PACKING

from .contenders import Contender, make_contenders
from .presets import (Preset, build_model, decoder_weight_bytes, engine_for, kv_bytes_per_token,
                      make_prompts)
from .report import TIMED
from .runners import Run, run_engine, run_hf
from .timing import copy_bandwidth_gbs, read_bandwidth_gbs, spread


def _kv_steps(c: Contender, run: Run, hf, batch, n_layers, prompt_lens, width):
    """Bytes of KV each decode step reads, and the cache's allocated and final occupied bytes."""
    per_token = kv_bytes_per_token(hf)
    n = len(run.step_ms) + 1
    if c.impl == "hf":  # one dynamic cache, left-padded to the widest prompt
        allocated = n_layers * per_token * batch * (width + n - 1)
        return [n_layers * per_token * batch * (width + i) for i in range(1, n)], allocated, allocated
    K = c.prune_layer

    def read(i):  # lengths after step i = keys step i attended (its own token included)
        return sum(kv_read_tokens(n_layers, K, *s.cache_lengths[i]) * per_token
                   for s in (r.stats for r in run.results))
    allocated = n_layers * per_token * batch * (max(prompt_lens) + n)
    return [read(i) for i in range(1, n)], allocated, read(n - 1)


def _exact(c: Contender, run: Run) -> dict:
    """FLOPs as run over dense FLOPs of the same tokens, and the kept visual tokens per step."""
    if c.impl == "hf":
        return dict(flops_vs_dense=1.0, decode_flops_vs_dense=1.0, kept_visual_by_step=[])
    stats = [r.stats for r in run.results]
    flops = sum(sum(s.flops) for s in stats) / sum(sum(s.dense_flops) for s in stats)
    decode = sum(sum(s.flops[1:]) for s in stats) / max(1, sum(sum(s.dense_flops[1:]) for s in stats))
    kept = [statistics.fmean(s.kept_visual[i] for s in stats) for i in range(len(stats[0].kept_visual))]
    return dict(flops_vs_dense=flops, decode_flops_vs_dense=decode, kept_visual_by_step=kept)


def run_suite(preset: Preset, *, batches, new_tokens, repeats, warmup, policies, device, dtype,
              predictor=None, seed=0, progress=True, prepack="load") -> dict:
    """Measure every (batch, contender); returns the JSON-ready result (see report.save_json).
    ``prepack``: see ``dyrate bench e2e --help``."""
    nbytes = preset.bandwidth_mib << 20
    bandwidth = [copy_bandwidth_gbs(device, nbytes)]
    hf = build_model(preset, device, dtype, seed)
    engine = engine_for(preset, hf, prepack=_prepack_option(prepack, batches, hf))
    contenders = make_contenders(policies, engine, new_tokens, predictor, seed)
    inputs = {batch: make_prompts(preset, batch, seed + 1) for batch in batches}
    all_lens = {batch: [len(x) for x in ids] for batch, (ids, _) in inputs.items()}
    # Timed rounds go round the batch sizes (round 1 of every batch, then round 2, ...), so the
    # repeats of one batch are minutes apart and their spread includes the shared machine's slow
    # drift: back to back, three repeats spanned a minute, and two runs of the same code differed
    # by more than that spread (python_bench/RESULTS.md).
    # Warm-up rounds run at the smallest batch only: what a first call pays (lazy imports and
    # caches, the allocator's first growth) does not depend on the batch, and a warm-up round at
    # batch 16 cost 90 of the cpu preset's 500 seconds.
    schedule = [(False, r, min(batches)) for r in range(warmup)]
    schedule += [(True, r, b) for r in range(repeats) for b in batches]
    runs = _play(schedule, contenders, hf, engine, inputs, new_tokens, seed, bandwidth,
                 lambda: copy_bandwidth_gbs(device, nbytes, repeats=5), progress)
    rows = []
    for batch in batches:
        weights = decoder_weight_bytes(hf, batch)
        for c in contenders:
            done = runs[(batch, c.spec)]
            kv_steps, kv_alloc, kv_final = _kv_steps(c, done[-1], hf, batch,
                                                     engine.decoder.n_layers, all_lens[batch],
                                                     max(all_lens[batch]))
            rows.append(dict(
                batch=batch, policy=c.spec, label=c.label, impl=c.impl, note=c.note,
                prune_layer=c.prune_layer, runs=done, weights_bytes=weights,
                kv_read_bytes_by_step=kv_steps, kv_allocated_bytes=kv_alloc,
                kv_final_bytes=kv_final, **_exact(c, done[-1])))
    # Each call's floor uses the bandwidth measured at the start of its round: a shared machine's
    # bandwidth drifts with its neighbours, and one figure for the whole run (the best, say) made
    # the fraction of the floor move by 15-40% between two runs of the same code.
    copy_bw = statistics.median(bandwidth)
    for row in rows:
        _finish_row(row, copy_bw)
    _ratios(rows)
    return dict(preset=preset.name, shape=preset.shape(), n_visual=preset.n_visual,
                prompt_lens=all_lens, batches=list(batches), new_tokens=new_tokens,
                repeats=repeats, warmup=warmup, device=str(device), dtype=dtype,
                copy_bandwidth_gbs=copy_bw, copy_bandwidth_measures_gbs=bandwidth,
                round_order=[[r, b] for timed, r, b in schedule if timed],
                prepack=prepack, packed_weights_bytes=engine.decoder.packed.nbytes,
                prefill_packed_bytes=engine.decoder.prefill_packed.nbytes,
                read_bandwidth_gbs=read_bandwidth_gbs(device, nbytes), rows=rows)


def _prepack_option(mode: str, batches, hf):
    """The engine's ``prepack`` for a bench ``--prepack`` mode."""
    if mode == "off":
        return False
    sizes = tuple(b for b in batches if b >= MIN_PACKED_ROWS)
    fp32_cpu = hf.device.type == "cpu" and hf.dtype == torch.float32
    if mode == "auto" or not (sizes and fp32_cpu and MKL_PACKING):
        return "auto"
    return sizes


def _play(schedule, contenders, hf, engine, inputs, new_tokens, seed, bandwidth, measure_bandwidth,
          progress) -> dict[tuple[int, str], list[Run]]:
    """Run the rounds of ``schedule`` (``(timed, round, batch)``); each timed round starts with
    a bandwidth measure (appended to ``bandwidth``) and runs the contenders in a seeded order.
    Returns the timed runs per (batch, contender)."""
    bar = tqdm(total=len(contenders) * len(schedule), unit="call", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    runs = {(batch, c.spec): [] for batch in inputs for c in contenders}
    for timed, round_, batch in schedule:
        ids, vision = inputs[batch]
        order = list(contenders)
        if timed:
            random.Random(seed * 1000 + batch * 100 + round_).shuffle(order)
            bar.set_description(f"batch {batch} bandwidth")
            bandwidth.append(measure_bandwidth())
        for c in order:
            bar.set_description(f"batch {batch} {c.label}"[:40])
            n = new_tokens if timed else 2
            run = run_hf(hf, ids, vision, n) if c.impl == "hf" else \
                run_engine(c.engine(engine), ids, vision, n, c.make_policy())
            if timed:
                run.bandwidth_gbs = bandwidth[-1]
                runs[(batch, c.spec)].append(run)
            bar.update()
    bar.close()
    return runs


def _floors_ms(row, bandwidth_gbs):
    return [(row["weights_bytes"] + kv) / (bandwidth_gbs * 1e9) * 1e3
            for kv in row["kv_read_bytes_by_step"]]


def _finish_row(row, copy_bw):
    """Per-repeat metrics -> median / min / max; per-step medians for the plots (whose floor
    uses the run's median bandwidth)."""
    batch, runs = row["batch"], row.pop("runs")
    per_run = {k: [] for k in TIMED}
    for run in runs:
        floors = _floors_ms(row, run.bandwidth_gbs)
        step = statistics.median(run.step_ms)
        n = len(run.step_ms) + 1
        per_run["prefill_ms"].append(run.prefill_ms)
        per_run["step_ms"].append(step)
        per_run["tokens_per_s"].append(batch / step * 1e3)
        per_run["e2e_tokens_per_s"].append(batch * n / run.wall_ms * 1e3)
        per_run["wall_ms"].append(run.wall_ms)
        per_run["peak_mem_mb"].append(run.peak_mem_bytes / 2**20)
        per_run["of_floor"].append(statistics.median(f / s for f, s in zip(floors, run.step_ms)))
    row["metrics"] = {k: spread(v) for k, v in per_run.items()}
    row["floor_ms_by_step"] = _floors_ms(row, copy_bw)
    row["step_ms_by_step"] = [statistics.median(s) for s in zip(*(r.step_ms for r in runs))]


def paired_ratios(rows, base: str) -> dict[tuple[int, str], list[float]]:
    """Per (batch, policy): each round's tokens/s over ``base``'s at the same batch (rows are
    paired by round; a policy without a ``base`` row at its batch, or ``base`` itself, has none)."""
    by = {(r["batch"], r["policy"]): r for r in rows}
    out = {}
    for (batch, policy), r in by.items():
        ref = by.get((batch, base))
        if ref is None or ref is r:
            continue
        a, b = r["metrics"]["tokens_per_s"]["values"], ref["metrics"]["tokens_per_s"]["values"]
        if len(a) != len(b):
            raise ValueError(f"batch {batch}: {policy} and {base} have different round counts")
        out[(batch, policy)] = [x / y for x, y in zip(a, b)]
    return out


def _ratios(rows):
    """tokens/s of each row over the dense engine's and over HF's at the same batch, paired by
    round: median, min and max of the per-round ratios."""
    by = {(r["batch"], r["policy"]): r for r in rows}
    for base in ("dense", "hf"):
        for key, ratios in paired_ratios(rows, base).items():
            by[key][f"vs_{base}"] = spread(ratios)
