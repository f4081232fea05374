"""``dyrate bench e2e | ops | compare | pool``: the benchmark suite behind the project's CLI.

    dyrate bench e2e --preset cpu --out out/bench/cpu_a          # table, JSON, PNG plots
    dyrate bench e2e --preset llava-1.5-7b --batch 1,8,32        # on a GPU
    dyrate bench e2e --preset qwen2.5-vl-cpu --visual-tokens 400,1600 --batch 1,8,16
    dyrate bench ops --device cuda --json out/bench/ops.json
    dyrate bench compare out/bench/cpu_a/e2e_cpu.json out/bench/cpu_b/e2e_cpu.json
    dyrate bench pool out/bench/cpu_*/e2e_cpu.json              # speed-ups pooled over runs
"""
from __future__ import annotations

import argparse
import json
import os

from .contenders import CONTENDER_HELP, DEFAULT_CONTENDERS
from .ops import add_arguments as add_ops_arguments
from .serve import add_arguments as add_serve_arguments
from .presets import PRESETS, with_visual_tokens


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text!r}")
    return values


def add_parser(subparsers) -> None:
    """Register ``bench`` and its subcommands on the ``dyrate`` command's subparsers."""
    bench = subparsers.add_parser("bench", help="benchmarks: end to end, ops, compare two runs",
                                  description=__doc__.splitlines()[0])
    sub = bench.add_subparsers(dest="bench_command", required=True)

    e2e = sub.add_parser("e2e", help="transformers generate and the engine under each policy")
    presets = "; ".join(f"{p.name}: {p.about}" for p in PRESETS.values())
    e2e.add_argument("--preset", default="tiny", choices=list(PRESETS), help=presets)
    e2e.add_argument("--batch", type=_ints, default=None, help="batch sizes, e.g. 1,16 "
                     "(default: the preset's)")
    e2e.add_argument("--visual-tokens", type=_ints, default=None,
                     help="visual tokens per prompt, e.g. 400,1600: one run per count, each "
                          "with its own JSON (default: the preset's image)")
    e2e.add_argument("--new-tokens", type=int, default=None,
                     help="new tokens per sequence, at least 2 (default: the preset's)")
    e2e.add_argument("--repeats", type=int, default=None, help="timed rounds (default: the preset's)")
    e2e.add_argument("--warmup", type=int, default=1, help="untimed rounds of 2 tokens per contender, at the smallest batch")
    e2e.add_argument("--policies", nargs="+", default=DEFAULT_CONTENDERS, metavar="SPEC",
                     help=f"{CONTENDER_HELP} (default: {' '.join(DEFAULT_CONTENDERS)})")
    e2e.add_argument("--predictor", default=None,
                     help="trained predictor directory (or 'demo') for the bare 'dyrate'")
    e2e.add_argument("--device", default=None, help="default: the preset's")
    e2e.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    e2e.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    e2e.add_argument("--seed", type=int, default=0)
    e2e.add_argument("--prepack", default="load", choices=["load", "auto", "off"],
                     help="fp32 on the CPU: 'load' packs the weights for MKL once, for the "
                          "run's batch sizes from 8 on, when the engine is built (as a server "
                          "would; the prefill then does not pay it); 'auto' packs at a call's "
                          "batch size, one size at a time; 'off' never")
    e2e.add_argument("--force", action="store_true",
                     help="run a GPU preset on the CPU anyway (hours at 7B)")
    e2e.add_argument("--out", default="out/bench", help="folder for the JSON and the plots")
    e2e.add_argument("--no-plots", action="store_true")
    e2e.add_argument("--no-progress", action="store_true")
    e2e.set_defaults(run=cmd_e2e)

    ops = sub.add_parser("ops", help="each fused op against its PyTorch reference")
    add_ops_arguments(ops)
    ops.set_defaults(run=cmd_ops)

    cmp = sub.add_parser("compare", help="do two e2e runs agree within their own spread?")
    cmp.add_argument("a", help="e2e JSON of the first run")
    cmp.add_argument("b", help="e2e JSON of the second run")
    cmp.add_argument("--tolerance", type=float, default=0.0,
                     help="widen every [min, max] range by this relative amount (default 0)")
    cmp.set_defaults(run=cmd_compare)

    pool = sub.add_parser("pool", help="speed-ups over Dense pooled over repeated e2e runs")
    pool.add_argument("runs", nargs="+", help="e2e JSON files of runs of the same command")
    pool.add_argument("--base", default="dense", help="the policy every ratio is over")
    pool.set_defaults(run=cmd_pool)

    _add_serving_parsers(sub)


def _add_serving_parsers(sub) -> None:
    """``bench serve`` and ``bench save-preset`` (a checkpoint for ``dyrate serve``)."""
    serve = sub.add_parser("serve", help="load a running dyrate serve: requests/s, TTFT, TPOT")
    add_serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
    save = sub.add_parser("save-preset", help="write a LLaVA preset's model and processor to a "
                                              "directory that dyrate serve loads")
    save.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    save.add_argument("--out", required=True, help="the checkpoint directory to write")
    save.add_argument("--seed", type=int, default=0)
    save.set_defaults(run=cmd_save_preset)


def cmd_e2e(args) -> int:
    import torch

    preset = PRESETS[args.preset]
    device = torch.device(args.device or preset.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"preset {preset.name} runs on CUDA and this machine has none; pass "
                         f"--device cpu --force to run it on the CPU anyway")
    if device.type == "cpu" and preset.device != "cpu" and not args.force:
        raise ValueError(f"preset {preset.name} is for a GPU ({preset.shape()}): on a CPU it "
                         f"would take hours; pass --force to run it anyway")
    new_tokens = args.new_tokens or preset.new_tokens
    if new_tokens < 2:
        raise ValueError(f"--new-tokens must be at least 2 (one decode step), got {new_tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for n_visual in args.visual_tokens or [None]:
        run_e2e(with_visual_tokens(preset, n_visual) if n_visual else preset, args, device,
                new_tokens)
    return 0


def run_e2e(preset, args, device, new_tokens) -> None:
    """One e2e suite on ``preset``: the table, the JSON and the plots."""
    from .e2e import run_suite
    from .report import machine_info, plot, print_table, save_json

    result = run_suite(preset, batches=args.batch or list(preset.batches), new_tokens=new_tokens,
                       repeats=args.repeats or preset.repeats, warmup=args.warmup,
                       policies=args.policies, device=device, dtype=args.dtype or preset.dtype,
                       predictor=args.predictor, seed=args.seed, progress=not args.no_progress,
                       prepack=args.prepack)
    result["machine"] = machine_info(device)
    print_table(result)
    path = os.path.join(args.out, f"e2e_{preset.name}.json")
    save_json(result, path)
    print(f"# wrote {path}")
    if not args.no_plots:
        for p in plot(result, args.out, log=print):
            print(f"# wrote {p}")


def cmd_save_preset(args) -> int:
    from .checkpoint import save_preset
    print(f"# wrote {save_preset(PRESETS[args.preset], args.out, args.seed)}")
    return 0


def cmd_serve(args) -> int:
    from .serve import run
    rows = run(args)
    return 0 if all(r["errors"] == 0 for r in rows) else 1


def cmd_ops(args) -> int:
    from .ops import run
    run(args)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    runs = []
    for path in (args.a, args.b):
        with open(path) as f:
            runs.append(json.load(f))
    ok, lines = compare(*runs, tolerance=args.tolerance)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_pool(args) -> int:
    from .pool import format_pooled, pooled_ratios

    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f))
    rows = pooled_ratios(runs, base=args.base)
    if not rows:
        raise ValueError(f"no policy with a {args.base!r} row at the same batch in these runs")
    print("\n".join(format_pooled(rows, base=args.base)))
    return 0
