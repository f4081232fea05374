"""Decode speed of the engine against transformers' greedy ``generate``, and the bandwidth floor.

A LLaVA-1.5-shaped model with random weights, built in memory (seed 0, fp32, eval): a CLIP vision
tower at 336 px, patch 14 (576 visual tokens, "default" strategy) but otherwise tiny (hidden 64,
1 layer; it is not what is measured), and a Llama text model of hidden 768, 12 layers, 12 heads
(MHA, head dim 64), intermediate 2048, vocab 32000. The engine wraps the same module
(``engine_for(preset, hf_model)``), so both run the same weights on the same prompts: B ragged sequences
``[bos, ~20 text tokens, 576 image tokens, ~15 text tokens]`` (HF gets them left-padded with an
attention mask) and random pixel values. EOS is disabled for both (``generation_config.eos_token_id
= None`` for transformers, ``ignore_eos=True`` for the engine), and every run is checked to produce
exactly the requested number of new tokens for every sequence.

Metric (the issue's): decode time = time of a call making N + 1 new tokens minus time of a call
making 1 new token, so the vision tower and the prefill cancel; ``ms/step`` is that over N and
``tokens/s`` is B * N over it. Each of the two calls is the median of ``--repeats`` runs after one
warm-up run (``timing.median_ms``); ``±`` is (spread of the long call + spread of the short
call) / N, a bound on how far the difference can move.

At this shape the prefill is most of either call (B x ~610 tokens against B x N), so on a shared
machine a neighbour's burst during one prefill moves the difference by more than the whole
decode (it can even come out negative). The ``in-loop`` columns are the robust cross-check, taken
from the same timed N + 1 runs, no extra calls: the duration of every decode step, pooled over
the timed runs (N x repeats steps), median. For transformers a step is the interval between
successive calls of a no-op stopping criterion (it runs once after each new token, so all of
generate's per-step work is inside); for the engine it is its own ``stats.step_ms`` (embedding,
layers, logits, sampling and reading the sampled tokens; the loop's per-sequence bookkeeping,
about 10 us a sequence, is outside that timer); ``dyrate bench e2e`` times steps the same way.
The mean of those steps is in the JSON (``in_loop_mean_ms``).

Bandwidth floor of one decode step: the bytes a step must read at least, over the machine's read
bandwidth. Bytes = the text decoder's weights (every layer parameter, the final norm and the
lm_head; the embedding table counts only the B rows a step gathers, not its 98 MB) + the KV cache
read, 2 * layers * kv_heads * head_dim * 4 bytes * the sum over sequences of their mean context
during decode (prompt + (N + 1) / 2). Read bandwidth = a large fp32 tensor's ``.sum()`` (bytes
read per second), the best of a measure before and after the runs, as the machine's bandwidth
drifts with its neighbours. The plain copy bandwidth (``timing.copy_bandwidth_gbs``) is printed
too, but it counts bytes read + written: taken as a read bandwidth it can overstate reading by up
to 2x (a floor up to 2x too low), hence the read-only figure. ``x floor`` = measured ms/step over
the floor.

    python python_bench/bench_decode.py --batch 1 8 16 --new-tokens 32 --repeats 3 \\
        --json python_bench/results/decode_cpu.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict, dataclass

import torch

from dyrate_engine.bench.presets import (PRESETS, build_model, decoder_weight_bytes, engine_for,
                                         kv_bytes_per_token, make_prompts)
from dyrate_engine.bench.report import machine_info, save_json
from dyrate_engine.bench.runners import run_engine, run_hf
from dyrate_engine.bench.timing import copy_bandwidth_gbs, median_ms, read_bandwidth_gbs

PRESET = PRESETS["cpu"]  # Llama 768 x 12, 576 visual tokens (the shape described above)


@dataclass
class Row:
    batch: int
    impl: str  # "hf" (transformers generate) or "engine"
    new_tokens: int  # N: decode steps measured
    ms_per_step: float  # (T(N + 1) - T(1)) / N
    spread_ms: float  # (spread of T(N + 1) + spread of T(1)) / N
    tokens_per_s: float  # B * N / (T(N + 1) - T(1))
    in_loop_ms: float  # median of the per-step durations inside the loop (see the docstring)
    in_loop_mean_ms: float
    in_loop_tokens_per_s: float  # B / in_loop_ms
    call_1_ms: float  # T(1): vision tower + prefill + first token
    call_n_ms: float  # T(N + 1)
    floor_ms: float = 0.0  # bytes a step must read / read bandwidth
    x_floor: float = 0.0
    speedup_vs_hf: float = 0.0
    in_loop_x_floor: float = 0.0
    in_loop_speedup_vs_hf: float = 0.0


def runner(impl, model, ids, vision, in_loop):
    """``run(n)``: one call making n new tokens; the decode steps of n > 1 calls go to in_loop."""
    def run(n):
        r = run_hf(model, ids, vision, n) if impl == "hf" else run_engine(model, ids, vision, n)
        if n > 1:
            in_loop.append(r.step_ms)
    return run


def step_bytes(hf, ids, n_new) -> dict:
    """Bytes one decode step of the batch must read: weights and KV cache (see the docstring)."""
    mean_context = sum(len(x) + (n_new + 1) / 2 for x in ids)
    per_token = kv_bytes_per_token(hf) * hf.config.text_config.num_hidden_layers
    return dict(weights=decoder_weight_bytes(hf, len(ids)), kv=int(per_token * mean_context))


def measure(name, run, batch, n, repeats):
    out = {}
    for tokens in (1, n + 1):
        ms, spread = median_ms(lambda: run(tokens), warmup=1, repeats=repeats, cold=False)
        out[tokens] = (ms, spread)
        print(f"  batch {batch:>3} {name:<6} {tokens:>4} new tokens: {ms:10.1f} ms "
              f"(spread {spread:.1f})", file=sys.stderr, flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--new-tokens", type=int, default=32,
                        help="N: decode steps measured (calls make N + 1 and 1 new tokens)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--impl", nargs="+", default=["hf", "engine"], choices=["hf", "engine"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the rows and the machine to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    N = args.new_tokens

    read_before, copy_before = read_bandwidth_gbs(), copy_bandwidth_gbs()
    hf = build_model(PRESET)
    engine = engine_for(PRESET, hf)
    machine = machine_info("cpu")
    n_text = sum(p.numel() for p in hf.model.language_model.parameters()) / 1e6
    print(f"# built the model: text {n_text:.1f}M params + lm_head, attention "
          f"{hf.config._attn_implementation}", file=sys.stderr, flush=True)

    rows, prompts, sizes = [], {}, {}
    for batch in args.batch:
        ids, vision = make_prompts(PRESET, batch)
        prompts[batch] = [len(x) for x in ids]
        for impl in args.impl:
            in_loop = []
            run = runner(impl, hf if impl == "hf" else engine, ids, vision, in_loop)
            t = measure(impl, run, batch, N, args.repeats)
            (long_ms, long_spread), (short_ms, short_spread) = t[N + 1], t[1]
            decode_ms = long_ms - short_ms
            steps = [ms for run_steps in in_loop[1:] for ms in run_steps]  # [0]: the warm-up
            step_ms = statistics.median(steps)
            rows.append(Row(
                batch, impl, N, ms_per_step=decode_ms / N,
                spread_ms=(long_spread + short_spread) / N,
                tokens_per_s=batch * N / (decode_ms * 1e-3), in_loop_ms=step_ms,
                in_loop_mean_ms=statistics.fmean(steps),
                in_loop_tokens_per_s=batch / (step_ms * 1e-3),
                call_1_ms=short_ms, call_n_ms=long_ms))
        sizes[batch] = step_bytes(hf, ids, N)
    # The floor uses the better of the bandwidths measured before and after the runs.
    read_bw = max(read_before, read_bandwidth_gbs())
    copy_bw = max(copy_before, copy_bandwidth_gbs())
    hf_rows = {r.batch: r for r in rows if r.impl == "hf"}
    for r in rows:
        r.floor_ms = sum(sizes[r.batch].values()) / (read_bw * 1e9) * 1e3
        r.x_floor = r.ms_per_step / r.floor_ms
        r.in_loop_x_floor = r.in_loop_ms / r.floor_ms
        ref = hf_rows.get(r.batch)
        r.speedup_vs_hf = ref.ms_per_step / r.ms_per_step if ref else float("nan")
        r.in_loop_speedup_vs_hf = ref.in_loop_ms / r.in_loop_ms if ref else float("nan")

    print(f"# {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}, "
          f"transformers {machine['transformers']}, commit {machine['commit']}, {machine['date']}; "
          f"read bandwidth {read_bw:.1f} GB/s (sum), copy {copy_bw:.1f} GB/s (read + write)")
    print(f"# {PRESET.shape()}, fp32; N = {N} decode steps, "
          f"median of {args.repeats} after 1 warm-up; bytes/step: weights "
          f"{sizes[args.batch[0]]['weights'] / 1e6:.0f} MB, KV "
          + ", ".join(f"B={b} {s['kv'] / 1e6:.0f} MB" for b, s in sizes.items()))
    print(f"{'':14}| {'(T(N+1) - T(1)) / N':^45} | {'in-loop (median step)':^35} |")
    print(f"{'batch':>5} {'impl':<7} | {'ms/step':>8} {'±':>7} {'tokens/s':>9} {'x floor':>8} "
          f"{'vs HF':>7} | {'ms/step':>8} {'tokens/s':>9} {'x floor':>8} {'vs HF':>6} | "
          f"{'floor ms':>8}")
    for r in rows:
        print(f"{r.batch:>5} {r.impl:<7} | {r.ms_per_step:8.2f} {r.spread_ms:7.2f} "
              f"{r.tokens_per_s:9.1f} {r.x_floor:7.2f}x {r.speedup_vs_hf:6.2f}x | "
              f"{r.in_loop_ms:8.2f} {r.in_loop_tokens_per_s:9.1f} {r.in_loop_x_floor:7.2f}x "
              f"{r.in_loop_speedup_vs_hf:5.2f}x | {r.floor_ms:8.2f}")
    if args.json:
        save_json({"suite": "decode", "machine": machine, "read_bandwidth_gbs": read_bw,
                   "copy_bandwidth_gbs": copy_bw, "text_config": PRESET.text,
                   "vision_config": PRESET.vision, "n_visual": PRESET.n_visual,
                   "prompt_lens": prompts, "bytes_per_step": sizes,
                   "rows": [asdict(r) for r in rows]}, args.json)
    return rows


if __name__ == "__main__":
    main()
