"""``dyrate eval``: caption quality vs compute of pruning policies on one evaluation set."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..policies.spec import POLICY_HELP
from .data import COCO_PROMPT

RATES = "0.25,0.5,0.75,0.9"
# New tokens per answer by default: captions end within 48, the detail task's answers within 128.
NEW_TOKENS = {"caption": 48, "detail": 160}


def add_parser(sub) -> None:
    """Register ``eval`` on the ``dyrate`` command's subparsers."""
    p = sub.add_parser(
        "eval", help="caption quality vs compute of pruning policies (CIDEr, BLEU-4, plots)",
        description="Caption every image of a set under each policy (greedy), then print a table "
                    "and write results.json, pareto.png (quality vs FLOPs saved), pareto_kv.png "
                    "(vs KV read by decoding), kept_by_step.png and attention_shares.png to "
                    "--out. Dense decoding is always evaluated as the reference.")
    p.add_argument("--model", default="demo", help="checkpoint directory, or 'demo'")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="demo-test[:N] / demo-val[:N] (the synthetic captions, "
                                     "default N 200; the default set), demo-detail-test[:N] (the "
                                     "long answers), or a JSONL of {image, prompt, answer} "
                                     "(paths relative to it)")
    data.add_argument("--coco", metavar="ANNOTATIONS",
                      help="COCO-style captions JSON (COCO, Flickr30K, NoCaps)")
    p.add_argument("--images", help="image folder for --coco")
    p.add_argument("--prompt", default=COCO_PROMPT, help="prompt for --coco images")
    p.add_argument("--policy", action="append", default=[], help=POLICY_HELP + "; repeatable")
    p.add_argument("--sweep", action="store_true",
                   help="add Schedule rates --sweep-rates at K=--sweep-layer and FastV ratios "
                        "--sweep-ratios at K=--sweep-fastv-layer (the default with no policy)")
    p.add_argument("--sweep-rates", default=RATES, help="Schedule rates of --sweep")
    p.add_argument("--sweep-layer", type=int, default=3, help="Schedule's K in --sweep")
    p.add_argument("--sweep-ratios", default=RATES, help="FastV ratios of --sweep")
    p.add_argument("--sweep-fastv-layer", type=int, default=2, help="FastV's K in --sweep")
    p.add_argument("--sweep-random", metavar="RATES",
                   help="add random-keep at these rates, K=--sweep-layer (comma list)")
    p.add_argument("--random-seeds", default="0", help="seeds of --sweep-random (comma list)")
    p.add_argument("--sweep-pool", metavar="SIDES",
                   help="add spatial pooling of each image's patch grid to SIDE x SIDE tokens "
                        "before the LLM (comma list; LLaVA-1.5 models)")
    p.add_argument("--dyrate", action="append", default=[], metavar="DIR",
                   help="a trained predictor directory (e.g. one per lambda); repeatable")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default 48, 160 for the demo's detail task")
    p.add_argument("--batch-size", type=int, default=16, help="requests per generate call")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--out", default="dyrate-eval", help="output folder (JSON and PNG plots)")
    p.add_argument("--monitor-layer", type=int, default=2,
                   help="layer of the dense attention-share run (Fig. 2)")
    p.add_argument("--no-attention", action="store_true", help="skip the attention-share run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.set_defaults(run=run)


def _rates(text: str, option: str) -> list[float]:
    try:
        return [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"{option} must be a comma list of numbers, got {text!r}") from None


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"{option} must be a comma list of integers, got {text!r}") from None


def _check_words(tokenizer, items, model) -> None:
    """Refuse a set whose prompts hold words the model's tokenizer cannot spell (a word-level
    tokenizer's unknown token, e.g. a demo model trained before the detail task existed)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None:
        return
    for prompt in dict.fromkeys(it.prompt for it in items):
        if unknown in tokenizer(prompt, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"{model}'s tokenizer does not know some words of the prompt "
                             f"{prompt!r}: the model was not trained for this set")


def build_policies(args) -> list:
    """The ``EvalPolicy`` list of the arguments: dense first, then --policy, the sweep,
    random-keep, --dyrate, pooling; repeated labels get a ``#n`` suffix."""
    from ..policies import Dense, DyRate, FastV, RandomKeep, Schedule, parse_policy
    from .harness import eval_policy, pooled_entry

    policies = [parse_policy(spec, new_tokens=args.max_new_tokens) for spec in args.policy]
    if args.sweep or not (policies or args.dyrate):
        policies += [Schedule([r], args.sweep_layer)
                     for r in _rates(args.sweep_rates, "--sweep-rates")]
        policies += [FastV(args.sweep_fastv_layer, ratio=r)
                     for r in _rates(args.sweep_ratios, "--sweep-ratios")]
    if args.sweep_random:
        policies += [RandomKeep([r], args.sweep_layer, seed=seed)
                     for seed in _ints(args.random_seeds, "--random-seeds")
                     for r in _rates(args.sweep_random, "--sweep-random")]
    policies += [DyRate.from_pretrained(d) for d in args.dyrate]
    if not any(type(p) is Dense and p.prune_layer is None for p in policies):
        policies.insert(0, Dense())
    entries, seen = [], {}
    pooled = [pooled_entry(side) for side in _ints(args.sweep_pool or "", "--sweep-pool")]
    for entry in [eval_policy(p) for p in policies] + pooled:
        seen[entry.label] = seen.get(entry.label, 0) + 1
        if seen[entry.label] > 1:
            entry.label = f"{entry.label}#{seen[entry.label]}"
        entries.append(entry)
    return entries


def run(args) -> int:
    """Run the harness for parsed ``args``; returns the exit code."""
    import torch

    from ..engine import Engine
    from ..models.pooled import PooledGrid
    from ..policies import Dense
    from . import harness
    from .data import load_eval_set, parse_demo_spec

    if args.max_new_tokens is None:
        demo = parse_demo_spec(args.data) if args.data else None
        args.max_new_tokens = NEW_TOKENS[demo[2] if demo else "caption"]
    for option in ("max_new_tokens", "batch_size"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1")
    if args.monitor_layer < 0:
        raise ValueError(f"--monitor-layer must be >= 0, got {args.monitor_layer}")
    items = load_eval_set(None if args.coco else (args.data or "demo-test"), coco=args.coco,
                          images=args.images, prompt=args.prompt, limit=args.limit)
    entries = build_policies(args)
    engine = Engine.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    if engine.model.processor is None:
        raise ValueError(f"{args.model} has no processor files: the harness needs its tokenizer")
    _check_words(engine.model.tokenizer, items, args.model)
    checks = [e.policy for e in entries]
    checks += [] if args.no_attention else [Dense(prune_layer=args.monitor_layer + 1)]
    for policy in checks:  # fail before any generation, not after the first policies ran
        engine.check_policy(policy)
    for entry in entries:
        if entry.pool_side is not None:
            PooledGrid(engine.model, entry.pool_side)

    common = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                  progress=not args.no_progress)
    harness.warm_up(engine, items)
    rows = [harness.run_policy(engine, items, e, **common) for e in entries]
    shares = None if args.no_attention else harness.attention_shares(
        engine, items, args.monitor_layer, **common)

    references = sum(len(it.references) for it in items)
    print(f"{args.model} on {args.coco or args.data or 'demo-test'}: {len(items)} images, "
          f"{references} references, greedy, max {args.max_new_tokens} new tokens, "
          f"batch {args.batch_size}, {args.device}")
    print(harness.format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "data": args.coco or args.data or "demo-test",
              "images": len(items), "references": references,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "device": args.device, "dtype": args.dtype,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "policies": [r.to_dict() for r in rows], "attention_shares": shares}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    written = [out / "results.json", *_plots(rows, shares, out)]
    print("wrote " + ", ".join(str(p) for p in written if p is not None))
    return 0


def _plots(rows, shares, out: Path) -> list:
    """The run's PNGs in ``out`` (None for a plot not drawn)."""
    from . import plots

    written = [plots.pareto_plot(rows, out / "pareto.png"),
               plots.pareto_plot(rows, out / "pareto_kv.png", saving="kv_read_reduction"),
               plots.kept_plot(rows, out / "kept_by_step.png")]
    if shares is not None:
        written.append(plots.attention_plot(shares, out / "attention_shares.png"))
    return written
