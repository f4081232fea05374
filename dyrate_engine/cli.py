"""Command line: ``dyrate generate --model PATH --image FILE --prompt TEXT [--policy dense]``."""
from __future__ import annotations

import argparse
import sys

POLICY_HELP = ("pruning policy: 'dense'; 'fastv[:K[:RATIO]]' (default 2:0.5); "
               "'schedule:K:R0[,R1,...]' (rate of step t is R[min(t, last)]); "
               "'dyrate[:DIR]' (a trained predictor directory; default: the demo's)")


def parse_policy(spec: str):
    """A policy from its command-line spelling (see POLICY_HELP)."""
    from .policies import Dense, DyRate, FastV, Schedule

    name, *fields = spec.split(":")
    try:
        if name == "dense" and not fields:
            return Dense()
        if name == "fastv" and len(fields) <= 2:
            layer = int(fields[0]) if fields else 2
            return FastV(layer=layer, ratio=float(fields[1]) if len(fields) > 1 else 0.5)
        if name == "dyrate" and len(fields) <= 1:
            return DyRate.from_pretrained(fields[0] if fields else "demo")
        if name == "schedule" and len(fields) == 2:
            return Schedule([float(r) for r in fields[1].split(",")], layer=int(fields[0]))
    except ValueError as error:
        raise ValueError(f"bad policy {spec!r}: {error}") from None
    raise ValueError(f"unknown policy {spec!r}; {POLICY_HELP}")


def cmd_generate(args) -> int:
    import torch
    from PIL import Image

    from . import Engine

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    engine = Engine.from_pretrained(args.model, device=args.device, dtype=dtype)
    image = Image.open(args.image)
    result = engine.generate(image, args.prompt, policy=parse_policy(args.policy),
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed)[0]
    print(result.text)
    print(f"[{args.policy}] {result.stats.summary()}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dyrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="answer a prompt about an image")
    gen.add_argument("--model", required=True, help="local LLaVA checkpoint directory")
    gen.add_argument("--image", required=True, help="image file")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--policy", default="dense", help=POLICY_HELP)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.set_defaults(run=cmd_generate)
    from .train.command import add_parser as add_train_parser
    add_train_parser(sub)
    from .eval.command import add_parser as add_eval_parser
    add_eval_parser(sub)
    from python_bench.cli import add_bench_parser  # the benchmark suite, shipped with the package
    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        print(f"dyrate: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
