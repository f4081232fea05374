"""What DyRate's predictor adds to a decode step of the LLaVA-shaped CPU model.

Two policies that do the same work except the predictor: ``Schedule([0, 0])`` (the monitor layer
runs every step, nothing is pruned) and ``DyRate`` with a predictor whose bias pins rate 0 (the
monitor, then features + linear + argmax, nothing pruned). Runs alternate between the two, and each
run's in-loop median step time is kept; the overhead is the ratio of the medians over runs. The
predictor call alone is also timed on the same shapes (median after warm-up).

    python python_bench/bench_predictor.py --batch 1,16 --new-tokens 24 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from dyrate_engine import DyRate, Schedule
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.bench.timing import median_ms
from dyrate_engine.predictor import RatePredictor

K = 3


def pinned_predictor(n_heads: int) -> RatePredictor:
    predictor = RatePredictor(n_heads)
    with torch.no_grad():
        predictor.linear.weight.normal_(0, 0.01)
        predictor.linear.bias.copy_(torch.tensor([10.0, 0, 0, 0, 0]))  # always rate 0
    return predictor.eval()


def step_median(engine, ids, vision, policy, n) -> float:
    [r, *_] = engine.generate_ids(ids, policy=policy, max_new_tokens=n, ignore_eos=True,
                                  **vision)
    assert len(r.token_ids) == n and max(r.stats.rates) == 0.0
    return statistics.median(r.stats.step_ms)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    torch.manual_seed(0)
    engine = engine_for(preset, build_model(preset))
    predictor = pinned_predictor(engine.decoder.n_heads)
    policies = {"schedule": Schedule([0.0, 0.0], K), "dyrate": DyRate(predictor, K)}
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        ids, vision = make_prompts(preset, batch)
        for policy in policies.values():  # warm-up
            step_median(engine, ids, vision, policy, 4)
        runs = {name: [] for name in policies}
        for _ in range(args.repeats):
            for name, policy in policies.items():
                runs[name].append(step_median(engine, ids, vision, policy, args.new_tokens))
        type_mass = torch.rand(batch, engine.decoder.n_heads, 4).softmax(-1)
        call_ms, _ = median_ms(lambda: predictor.predict(type_mass, 5), warmup=20, repeats=200,
                               cold=False)
        base, with_predictor = statistics.median(runs["schedule"]), statistics.median(runs["dyrate"])
        rows.append({"batch": batch, "step_ms_monitor_only": base,
                     "step_ms_with_predictor": with_predictor,
                     "overhead_pct": 100 * (with_predictor / base - 1),
                     "predictor_call_us": call_ms * 1e3,
                     "predictor_call_pct_of_step": 100 * call_ms / base,
                     "runs": runs})
        print(f"batch {batch:3d}: step {base:7.2f} ms (monitor only) vs {with_predictor:7.2f} ms "
              f"(with predictor): {rows[-1]['overhead_pct']:+.2f}%; predictor call alone "
              f"{call_ms * 1e3:.1f} us = {rows[-1]['predictor_call_pct_of_step']:.3f}% of the step")
    report = {"preset": preset.name, "shape": preset.shape(), "machine": platform.processor() or
              platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "new_tokens": args.new_tokens,
              "repeats": args.repeats, "rows": rows,
              "command": "python python_bench/bench_predictor.py " + " ".join(argv or sys.argv[1:])}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
