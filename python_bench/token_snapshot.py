"""Token ids, kept visual tokens and rates of Dense, FastV, Schedule, a rising Schedule and DyRate,
on the first scenes of the demo test split and on four tiny random checkpoints, as JSON. Run it at
two commits and compare the files to show that a change leaves every output as it was. Only
keyword arguments and positional policy arguments that every version of the API accepts are used.

    python python_bench/token_snapshot.py --out tokens.json
"""
import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

TINY = {
    "llama-gqa": dict(kind="llama", kv_heads=2, layers=4),
    "llama-mha-bias": dict(kind="llama", kv_heads=4, attention_bias=True, mlp_bias=True, layers=4),
    "mistral-window": dict(kind="mistral", kv_heads=1, sliding_window=64, layers=4),
    "qwen2": dict(kind="qwen2", kv_heads=2, layers=4),
}


def _tests_module(name: str):
    """A helper module of the repository's tests, loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "tests" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(results) -> list:
    return [[r.token_ids, r.stats.kept_visual, r.stats.rates] for r in results]


def demo_outputs(scenes: int) -> dict:
    from dyrate_engine import Dense, DyRate, Engine, FastV, Schedule
    try:
        from dyrate_engine.data.scenes import make_scene
    except ImportError:  # the layout before the data package
        from dyrate_engine.demo.scenes import make_scene

    engine = Engine.from_pretrained("demo")
    items = [make_scene("test", i) for i in range(scenes)]
    policies = {"dense": lambda: Dense(), "fastv": lambda: FastV(2, 0.5),
                "schedule": lambda: Schedule([0.75], 3),
                "ramp": lambda: Schedule([0.2, 0.4, 0.6, 0.8], 3),
                "dyrate": lambda: DyRate.from_pretrained("demo")}
    out = {}
    for name, make in policies.items():
        results = []
        for start in range(0, scenes, 8):
            chunk = items[start:start + 8]
            results += engine.generate([s.render() for s in chunk], [s.prompt for s in chunk],
                                       policy=make(), max_new_tokens=48)
        out[f"demo/{name}"] = _rows(results)
    return out


def tiny_outputs() -> dict:
    import torch

    from dyrate_engine import Dense, DyRate, Engine, FastV, Schedule
    from dyrate_engine.predictor import RatePredictor

    tiny = _tests_module("tiny_models")
    out = {}
    for name, config in TINY.items():
        with tempfile.TemporaryDirectory() as directory:
            engine = Engine.from_pretrained(tiny.build_tiny_llava(directory, **config))
            ids, pixels = tiny.random_prompts(3, seed=7)
            torch.manual_seed(4)
            predictor = RatePredictor(engine.decoder.n_heads)
            with torch.no_grad():
                predictor.linear.weight.mul_(40.0)  # a choice that changes from step to step
            policies = {"dense": lambda: Dense(), "fastv": lambda: FastV(2, 0.5),
                        "schedule": lambda: Schedule([0.0, 0.5, 0.75], 2),
                        "dyrate": lambda: DyRate(predictor, 2)}
            for policy, make in policies.items():
                out[f"{name}/{policy}"] = _rows(engine.generate_ids(
                    ids, pixels, policy=make(), max_new_tokens=12))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--scenes", type=int, default=40, help="demo test scenes")
    args = parser.parse_args(argv)
    outputs = {**demo_outputs(args.scenes), **tiny_outputs()}
    args.out.write_text(json.dumps(outputs))
    print(f"{len(outputs)} (model, policy) entries -> {args.out}")


if __name__ == "__main__":
    main()
