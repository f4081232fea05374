"""Decode step with and without MKL-packed weights (``Engine(prepack=...)``), in one process.

The two engines share one model; each round runs both on the same prompts (3 untimed tokens in
round 0), and the figure is the paired ratio of their median step times per round.

    python python_bench/bench_prepack.py --preset cpu-vllm --batch 8,16 --rounds 4
"""
import argparse
import statistics

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.engine import Engine
from dyrate_engine.policies import Dense


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    parser.add_argument("--batch", default="8,16")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    model = engine_for(preset, build_model(preset)).model
    engines = {"unpacked": Engine(model, prepack=False), "packed": Engine(model, prepack=True)}
    for batch in (int(b) for b in args.batch.split(",")):
        ids, vision = make_prompts(preset, batch, 1)
        steps = {name: [] for name in engines}
        for round_ in range(args.rounds + 1):
            for name, engine in engines.items():
                out = engine.generate_ids(ids, policy=Dense(), **vision,
                                          max_new_tokens=args.new_tokens if round_ else 3)
                if round_:
                    steps[name].append(statistics.median(out[0].stats.step_ms))
        ratios = [u / p for u, p in zip(steps["unpacked"], steps["packed"])]
        print(f"batch {batch}: median step ms unpacked {statistics.median(steps['unpacked']):.1f}"
              f", packed {statistics.median(steps['packed']):.1f}; paired speedup "
              f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]",
              flush=True)


if __name__ == "__main__":
    main()
