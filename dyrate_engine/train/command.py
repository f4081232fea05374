"""``dyrate train-predictor``: train DyRate's rate predictor on a checkpoint and export it."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from ..data import DEFAULT_PROMPT
from ..deprecation import DeprecatedFlag
from .costs import COSTS


def add_parser(sub) -> None:
    p = sub.add_parser("train-predictor", help="train and export a DyRate rate predictor",
                       description="Train DyRate's rate predictor end to end (Gumbel-Softmax, "
                                   "frozen VLM) and export predictor.safetensors + predictor.json.")
    p.add_argument("--model", required=True, help="LLaVA checkpoint directory, or 'demo'")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="JSONL of {image, prompt, answer} (paths relative to it)")
    data.add_argument("--coco", metavar="ANNOTATIONS", help="COCO-style captions JSON")
    p.add_argument("--images", help="image folder for --coco")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for --coco records")
    p.add_argument("--out", required=True, help="output directory of the artifact")
    p.add_argument("--lam", type=float, default=1.0,
                   help="weight of the expected cost ratio (higher: more pruning)")
    p.add_argument("--cost", choices=COSTS, default="flops",
                   help="what the penalty counts: the FLOPs of the whole generation, or the "
                        "keys and values the decode steps read (where a per-step rate pays)")
    p.add_argument("--budget", type=float, default=None,
                   help="penalise only the expected cost ratio above this (e.g. 0.67)")
    p.add_argument("--flops-budget", dest="budget", type=float, action=DeprecatedFlag,
                   help=argparse.SUPPRESS)
    p.add_argument("--prune-layer", type=int, default=3, help="K, the first pruned layer")
    p.add_argument("--layer", dest="prune_layer", type=int, action=DeprecatedFlag,
                   help=argparse.SUPPRESS)
    p.add_argument("--rates", default="0,0.25,0.5,0.75,0.9", help="candidate rates")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--tau-start", type=float, default=1.0)
    p.add_argument("--tau-end", type=float, default=0.2)
    p.add_argument("--step-scale", type=float, default=32.0,
                   help="decode step at which the predictor's progress feature saturates (1.0); "
                        "about the answer length lets the rate rise over the whole answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=None, help="use at most N records")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out for the report")
    p.add_argument("--unfreeze-layers", default="", help="comma list of pruned layers to tune")
    p.add_argument("--unfreeze-lr", type=float, default=1e-4, help="learning rate of those layers")
    p.add_argument("--ranking", choices=["step", "prefill"], default="step",
                   help="rank visual tokens by each answer position's scores (step) or by the "
                        "last prompt token's, as the engine's monotone cache keeps them (prefill)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..data import load_coco, load_jsonl
    from ..models import load_model
    from ..predictor import save_predictor
    from .examples import encode
    from .trainer import TrainConfig, config_record, evaluate, train_predictor

    if args.coco and not args.images:
        raise ValueError("--coco needs --images (the image folder)")
    if not args.step_scale > 0:
        raise ValueError(f"--step-scale must be > 0, got {args.step_scale}")
    records = load_jsonl(args.data) if args.data else load_coco(args.coco, args.images,
                                                                args.prompt)
    random.Random(args.seed).shuffle(records)
    records = records[:args.max_examples] if args.max_examples else records
    n_val = max(1, int(len(records) * args.val_fraction)) if len(records) > 1 else 0
    model = load_model(args.model, device=args.device)
    if model.processor is None:
        raise ValueError(f"{args.model} has no processor files: training needs its tokenizer")
    examples = encode(model, tqdm(records, desc="encoding", unit="record"))
    val, train = examples[:n_val], examples[n_val:]
    cfg = TrainConfig(rates=tuple(float(r) for r in args.rates.split(",")),
                      prune_layer=args.prune_layer,
                      lam=args.lam, budget=args.budget, cost=args.cost,
                      steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, tau_start=args.tau_start,
                      tau_end=args.tau_end, step_scale=args.step_scale, seed=args.seed,
                      unfreeze_lr=args.unfreeze_lr,
                      ranking=args.ranking,
                      unfreeze_layers=tuple(int(i) for i in args.unfreeze_layers.split(",") if i))
    predictor = train_predictor(model, train, cfg)
    report = evaluate(model, predictor, val, cfg) if val else {}
    out = Path(args.out)
    training = {"data": str(args.data or args.coco), "examples": len(train),
                "held_out": len(val), "held_out_metrics": report, "lam": cfg.lam,
                "config": config_record(cfg),
                "final_train_loss": cfg.history[-1]["loss"] if cfg.history else None}
    if cfg.unfreeze_layers:  # the tuned layers belong with the predictor
        model.hf.save_pretrained(out / "model")
        model.processor.save_pretrained(out / "model")
        training["tuned_model"] = "model/"
    save_predictor(out, predictor, prune_layer=cfg.prune_layer, text_config=model.text_config,
                   training=training, family=model.family)
    print(json.dumps({"out": str(out), "held_out": report}, indent=1))
    return 0
