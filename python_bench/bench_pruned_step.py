"""Does transformers' generate, run earlier in the same process, slow the engine's pruned decode
step? The cpu preset at batch 16: the engine's in-loop median step under Dense and Schedule(K=3,
0.75), in a fresh process, then again after one HF generate call (python_bench/RESULTS.md has
three tries that disagree, so no such effect is established).

    python python_bench/bench_pruned_step.py
"""
import argparse
import statistics

from dyrate_engine import Schedule
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.bench.runners import run_engine, run_hf


def main(batch=16, new_tokens=10):
    preset = PRESETS["cpu"]
    hf = build_model(preset, "cpu", "float32", 0)
    engine = engine_for(preset, hf)
    ids, vision = make_prompts(preset, batch, 1)
    policies = {"dense": lambda: None, "schedule:3:0.75": lambda: Schedule([0.75], 3)}
    for when in ("fresh process", "after one HF generate"):
        steps = {}
        for name, make in policies.items():
            steps[name] = statistics.median(run_engine(engine, ids, vision, new_tokens,
                                                       make()).step_ms)
        dense, pruned = steps["dense"], steps["schedule:3:0.75"]
        print(f"{when}: median step dense {dense:.1f} ms, schedule:3:0.75 {pruned:.1f} ms "
              f"({dense / pruned:.2f}x)", flush=True)
        if when == "fresh process":
            run_hf(hf, ids, vision, 4)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
