"""Prefill with and without the last layer's shortcut (``prefill_layers(last_row_only=...)``:
the model's last layer computes every token's keys and values but only the last token's output),
in one process, on the same prompts, alternating per round.

    python python_bench/bench_prefill_last_row.py --preset cpu-vllm --batch 1 --rounds 8

Prints the engine's prefill milliseconds (``stats.prefill_ms``) of each path, medians over the
rounds, and the paired ratio per round (its median and range).
"""
import argparse
import functools
import statistics

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.engine import prefill as prefill_module
from dyrate_engine.engine import runner
from dyrate_engine.policies import Dense


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    engine = engine_for(preset, build_model(preset))
    ids, vision = make_prompts(preset, args.batch, 1)
    paths = {"all rows": functools.partial(runner.prefill_layers, last_row_only=False),
             "last row": runner.prefill_layers}
    times = {name: [] for name in paths}
    tokens = {}
    for round_ in range(args.rounds + 1):
        for name, layers in paths.items():
            prefill_module.prefill_layers = layers
            out = engine.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=2)
            tokens.setdefault(name, [r.token_ids for r in out])
            if round_:  # round 0 warms up
                times[name].append(out[0].stats.prefill_ms)
    prefill_module.prefill_layers = runner.prefill_layers
    ratios = [a / b for a, b in zip(times["all rows"], times["last row"])]
    print(f"{args.preset}, batch {args.batch}, {args.rounds} rounds: prefill ms all rows "
          f"{statistics.median(times['all rows']):.1f}, last row "
          f"{statistics.median(times['last row']):.1f}; paired speedup "
          f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}, {max(ratios):.3f}]; same tokens: "
          f"{tokens['all rows'] == tokens['last row']}")


if __name__ == "__main__":
    main()
