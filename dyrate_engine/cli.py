"""Command line: ``dyrate generate | train-predictor | eval | bench | serve``."""
from __future__ import annotations

import argparse
import sys

from .bench.cli import add_parser as add_bench_parser
from .eval.command import add_parser as add_eval_parser
from .models.tensor_parallel import DEFAULT_TIMEOUT_S
from .models.video import DEFAULT_FPS
from .policies.spec import POLICY_HELP
from .serve.command import add_parser as add_serve_parser
from .train.command import add_parser as add_train_parser


def cmd_generate(args) -> int:
    import torch

    from .engine import Engine
    from .models.images import open_image
    from .models.tensor_parallel import TensorParallelError
    from .models.video import open_video
    from .policies import parse_policy

    if not args.image and not args.video:
        raise ValueError("give at least one --image or --video")
    policy = parse_policy(args.policy, new_tokens=args.max_new_tokens)
    images = [open_image(path) for path in args.image or []]
    videos = [open_video(path, args.fps) for path in args.video or []] or None
    try:
        engine = Engine.from_pretrained(args.model, device=args.device,
                                        dtype=getattr(torch, args.dtype), tp=args.tp,
                                        tp_timeout_s=args.tp_timeout)
        result = engine.generate([images], [args.prompt], policy=policy, videos=[videos],
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, seed=args.seed)[0]
    except TensorParallelError as error:
        print(f"dyrate: error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.tp > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    parallel = engine.decoder.parallel
    if parallel is None or parallel.rank == 0:  # every rank has the same answer
        print(result.text)
        print(f"[{args.policy}] {result.stats.summary()}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dyrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="answer a prompt about images or videos")
    gen.add_argument("--model", required=True, help="local checkpoint directory, or 'demo'")
    gen.add_argument("--image", action="append",
                     help="image file; repeat for several images, shown in order")
    gen.add_argument("--video", action="append",
                     help="video (Qwen-VL families): a directory of frame images or an "
                          "animated GIF/WebP/PNG; repeat for several, shown after the images")
    gen.add_argument("--fps", type=float, default=DEFAULT_FPS,
                     help="the rate the --video frames were sampled at")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--policy", default="dense", help=POLICY_HELP)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--tp", type=int, default=1,
                     help="tensor-parallel ranks: run as torchrun --nproc-per-node N -m "
                          "dyrate_engine.cli generate --tp N ... (rank 0 prints)")
    gen.add_argument("--tp-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                     help="seconds a rank waits for the others before all fail with an error")
    gen.set_defaults(run=cmd_generate)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_bench_parser(sub)
    add_serve_parser(sub)
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
