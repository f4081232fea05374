"""What pruning buys on the CPU: the engine with Schedule(0.75) against the engine dense.

Same LLaVA-shaped random model and ragged prompts as ``bench_decode.py`` (Llama 768 x 12 layers,
576 visual tokens). Prefill = a call making one new token (vision tower, prefill, first token);
decode = (T(N + 1) - T(1)) / N as in bench_decode, and the engine's own median step time from
``stats.step_ms`` (the steadier figure on this shared machine). Medians of ``--repeats`` after a
warm-up; the dense run is measured in the same process on the same prompts.

    python python_bench/bench_pruning.py --batch 1 16 --json python_bench/results/pruning_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass

import torch

from bench_decode import build_model, make_prompts
from timing import median_ms

from dyrate_engine import Engine, Schedule

POLICIES = {"dense": lambda: None, "schedule(K=3,0.75)": lambda: Schedule([0.75], layer=3)}


@dataclass
class Row:
    batch: int
    policy: str
    prefill_ms: float
    prefill_spread_ms: float
    decode_ms_per_step: float
    step_ms_median: float
    tokens_per_s: float
    kept_visual: int
    flops_vs_dense: float
    prefill_speedup: float = 1.0
    decode_speedup: float = 1.0


def measure(engine, ids, pixels, policy_factory, n, repeats):
    steps = []

    def run(tokens):
        results = engine.generate_ids(ids, pixels, policy=policy_factory(), max_new_tokens=tokens)
        if tokens > 1:
            steps.extend(results[0].stats.step_ms)
        return results

    short, short_spread = median_ms(lambda: run(1), warmup=1, repeats=repeats, cold=False)
    long, _ = median_ms(lambda: run(n + 1), warmup=1, repeats=repeats, cold=False)
    last = run(n + 1)[0].stats
    step = statistics.median(steps)
    return dict(prefill_ms=short, prefill_spread_ms=short_spread, decode_ms_per_step=(long - short) / n,
                step_ms_median=step, tokens_per_s=len(ids) / (step * 1e-3),
                kept_visual=last.kept_visual[-1], flops_vs_dense=1 - last.flops_saved)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    hf = build_model()
    engine = Engine(hf)
    engine.eos_token_ids = []
    rows = []
    for batch in args.batch:
        ids, pixels = make_prompts(batch)
        for name, factory in POLICIES.items():
            r = Row(batch, name, **measure(engine, ids, pixels, factory, args.new_tokens, args.repeats))
            rows.append(r)
            print(f"  measured batch {batch} {name}", file=sys.stderr, flush=True)
    dense = {r.batch: r for r in rows if r.policy == "dense"}
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}; Llama 768 x 12 fp32, "
          f"576 visual tokens, N = {args.new_tokens}, median of {args.repeats}")
    print(f"{'batch':>5} {'policy':<20} {'prefill ms':>10} {'±':>6} {'x':>6} | {'decode ms':>9} "
          f"{'step ms':>8} {'tok/s':>7} {'x':>6} | {'kept':>4} {'FLOPs':>6}")
    for r in rows:
        r.prefill_speedup = dense[r.batch].prefill_ms / r.prefill_ms
        r.decode_speedup = dense[r.batch].step_ms_median / r.step_ms_median
        print(f"{r.batch:>5} {r.policy:<20} {r.prefill_ms:10.0f} {r.prefill_spread_ms:6.0f} "
              f"{r.prefill_speedup:5.2f}x | {r.decode_ms_per_step:9.1f} {r.step_ms_median:8.1f} "
              f"{r.tokens_per_s:7.1f} {r.decode_speedup:5.2f}x | {r.kept_visual:>4} "
              f"{r.flops_vs_dense:6.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "rows": [asdict(r) for r in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
