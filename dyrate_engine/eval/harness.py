"""The quality harness: run pruning policies over an evaluation set with the engine, in batches,
and aggregate per policy the caption metrics, the FLOPs and KV-read reductions against dense
decoding, the visual tokens kept (in all and per step) and the throughput; plus, for dense decoding with a monitor layer, the mean
attention share of each token type per decode step (DyRate's Fig. 2)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..models import flops
from ..models.pooled import PooledGrid
from ..policies import Dense, DyRate, FastV, Policy, RandomKeep, Schedule
from .data import EvalItem
from .metrics import caption_scores

TOKEN_TYPES = ("system", "image", "instruction", "response")
_FAMILIES = ((DyRate, "dyrate"), (FastV, "fastv"), (RandomKeep, "random"), (Schedule, "schedule"),
             (Dense, "dense"))


@dataclass
class EvalPolicy:
    """A policy to evaluate, its row label and its family (one line in the Pareto plot).
    ``pool_side``: run it on the model with every image average-pooled to a ``side x side``
    grid before the LLM (the spatial-pooling baseline, ``models.pooled``)."""

    label: str
    family: str
    policy: Policy
    pool_side: int | None = None
    source: str = ""  # the predictor directory of a loaded DyRate (labels may repeat)


def pooled_entry(side: int) -> EvalPolicy:
    """The spatial-pooling baseline at ``side x side`` tokens per image, dense otherwise."""
    return EvalPolicy(f"pool({side}x{side})", "pool", Dense(), side)


def eval_policy(policy: Policy, label: str | None = None) -> EvalPolicy:
    """Wrap ``policy`` with its family (dense / fastv / schedule / dyrate, else its class name)
    and a label (default: ``policy.name``; a loaded DyRate's adds its training lambda, and its
    budget, cost, learning rate and seed where they are not the defaults)."""
    family = next((name for cls, name in _FAMILIES if isinstance(policy, cls)),
                  type(policy).__name__.lower())
    if label is None:
        label = policy.name
        training = (getattr(policy, "meta", None) or {}).get("training") or {}
        if family == "dyrate" and training.get("lam") is not None:
            label = f"{label[:-1]},{_training_label(training)})"
    return EvalPolicy(label, family, policy, source=getattr(policy, "source", None) or "")


def _training_label(training: dict) -> str:
    config = training.get("config") or {}
    parts = [f"lam={training['lam']:g}"]
    budget = config.get("budget", config.get("flops_budget"))  # the name before the KV cost
    if budget is not None:
        parts.append(f"budget={budget:g}")
    if config.get("lr", 1e-2) != 1e-2:
        parts.append(f"lr={config['lr']:g}")
    if config.get("cost", "flops") != "flops":
        parts.append(f"cost={config['cost']}")
    if config.get("seed", 0) != 0:
        parts.append(f"seed={config['seed']}")
    return ",".join(parts)


@dataclass
class PolicyResult:
    """Aggregates of one policy over the set. ``flops_reduction`` is 1 - sum(flops) /
    sum(dense_flops) over every request and step (prefill included); ``mean_kept_visual`` the
    mean over every step of every request of the visual tokens left in the pruned layers;
    ``kv_read_reduction`` 1 - the keys and values the decode steps read (the prefill excluded)
    over what dense decoding of the same prompt reads (a pooled row's dense side has its pooled
    tokens back): where pruning while decoding saves a bandwidth-bound step's time
    (``train.costs``); ``tokens_per_s`` the new tokens of all requests over the wall time of the generate calls."""

    label: str
    family: str
    cider: float
    bleu4: float
    exact_match: float
    flops_reduction: float
    kv_read_reduction: float
    mean_kept_visual: float
    mean_visual: float
    tokens_per_s: float
    new_tokens: int
    wall_s: float
    images: int
    # Mean visual tokens kept at each step (0 = the prefill) over the requests still answering:
    # where a per-step rate shows whether it rises over the answer.
    kept_visual_by_step: list = field(default_factory=list)
    source: str = ""  # the predictor directory of a loaded DyRate
    outputs: dict = field(default_factory=dict)  # key -> {"text", "cider", "exact"}

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return asdict(self)


def generate_all(engine, items: list[EvalItem], policy: Policy, *, max_new_tokens: int,
                 batch_size: int, desc: str = "", progress: bool = True):
    """Greedy answers of every item under ``policy``, ``batch_size`` requests per generate call
    (a request's result does not depend on its batch). Returns ``(results, wall seconds)``,
    the time counting the generate calls only (not image loading)."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    results, wall = [], 0.0
    with tqdm(total=len(items), desc=desc, unit="image", disable=not progress,
              leave=False) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            images = [it.load_image() for it in batch]
            t0 = time.perf_counter()
            results += engine.generate(images, [it.prompt for it in batch], policy=policy,
                                       max_new_tokens=max_new_tokens)
            wall += time.perf_counter() - t0
            bar.update(len(batch))
    return results, wall


def dense_flops_of(decoder, stats, extra_tokens: int = 0) -> int:
    """The FLOPs dense decoding spends on a request's steps with ``extra_tokens`` more tokens in
    every layer (the visual tokens pooled away before the LLM); ``stats.dense_flops`` when 0."""
    L = decoder.n_layers
    total = 0
    for step, (dense, _) in enumerate(stats.cache_lengths):
        count = flops.prefill_flops if step == 0 else flops.decode_flops
        total += count(decoder, [dense + extra_tokens] * L)
    return total


def kv_reads_of(decoder, stats, prune_layer: int | None, extra_tokens: int = 0) -> tuple[int, int]:
    """Keys and values a request's decode steps read (in tokens, over every layer), and what
    dense decoding of it reads with ``extra_tokens`` more tokens in every layer."""
    L = decoder.n_layers
    K = L if prune_layer is None else prune_layer
    steps = stats.cache_lengths[1:]
    return (sum(flops.kv_read_tokens(L, K, dense, kept) for dense, kept in steps),
            sum(L * (dense + extra_tokens) for dense, _ in steps))


def run_policy(engine, items: list[EvalItem], entry: EvalPolicy, *, max_new_tokens: int = 48,
               batch_size: int = 16, progress: bool = True) -> PolicyResult:
    """Answer every item under ``entry`` and aggregate (see :class:`PolicyResult`); a pooled
    entry's FLOPs reduction counts against dense decoding of the unpooled prompt."""
    runner = engine
    if entry.pool_side is not None:  # the same weights, packing and decode step: only the
        runner = engine.with_model(PooledGrid(engine.model, entry.pool_side))  # prompt differs
        warm_up(runner, items)
    results, wall = generate_all(runner, items, entry.policy, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, desc=entry.label, progress=progress)
    texts = {it.key: (r.text or "").strip() for it, r in zip(items, results)}
    scores = caption_scores(texts, {it.key: it.references for it in items})
    stats = [r.stats for r in results]
    pooled_away = [0 if entry.pool_side is None else runner.model.pooled_away(s.n_visual)
                   for s in stats]
    dense = sum(dense_flops_of(engine.decoder, s, extra) if extra else sum(s.dense_flops)
                for s, extra in zip(stats, pooled_away))
    kept = [k for s in stats for k in s.kept_visual]
    reads = [kv_reads_of(engine.decoder, s, entry.policy.prune_layer, extra)
             for s, extra in zip(stats, pooled_away)]
    kv_dense = sum(d for _, d in reads)
    new_tokens = sum(len(r.token_ids) for r in results)
    return PolicyResult(
        label=entry.label, family=entry.family, cider=scores["cider"], bleu4=scores["bleu4"],
        exact_match=scores["exact_match"],
        flops_reduction=1 - sum(sum(s.flops) for s in stats) / dense if dense else 0.0,
        kv_read_reduction=1 - sum(r for r, _ in reads) / kv_dense if kv_dense else 0.0,
        mean_kept_visual=sum(kept) / len(kept) if kept else 0.0,
        mean_visual=sum(s.n_visual + extra for s, extra in zip(stats, pooled_away)) / len(stats),
        tokens_per_s=new_tokens / wall if wall > 0 else 0.0, new_tokens=new_tokens,
        wall_s=wall, images=len(items),
        kept_visual_by_step=mean_by_step([s.kept_visual for s in stats]), source=entry.source,
        outputs={k: {"text": texts[k], **scores["per_item"][k]} for k in texts})


def attention_shares(engine, items: list[EvalItem], monitor_layer: int = 2, *,
                     max_new_tokens: int = 48, batch_size: int = 16,
                     progress: bool = True) -> dict:
    """Dense decoding with the monitor at ``monitor_layer``: the head-mean attention share of the
    newest token on each token type, averaged per decode step (0 = the last prompt token) over
    the requests still generating at that step. Returns ``{"monitor_layer", "steps",
    "requests" (per step), "shares": {type: [mean per step]}}``."""
    results, _ = generate_all(engine, items, Dense(prune_layer=monitor_layer + 1),
                              max_new_tokens=max_new_tokens, batch_size=batch_size,
                              desc=f"attention (layer {monitor_layer})", progress=progress)
    masses = [r.stats.type_mass for r in results]
    counts = [sum(len(m) > step for m in masses) for step in range(max(map(len, masses), default=0))]
    return {"monitor_layer": monitor_layer, "steps": list(range(len(counts))), "requests": counts,
            "shares": {name: mean_by_step([[row[i] for row in m] for m in masses])
                       for i, name in enumerate(TOKEN_TYPES)}}


def mean_by_step(per_request: list[list[float]]) -> list[float]:
    """The mean at each step over the requests that reached it (answers differ in length)."""
    steps = max(map(len, per_request), default=0)
    out = []
    for step in range(steps):
        values = [seq[step] for seq in per_request if len(seq) > step]
        out.append(sum(values) / len(values))
    return out


def warm_up(engine, items: list[EvalItem]) -> None:
    """One short generate call so that one-time costs do not land in the first policy's time."""
    engine.generate([items[0].load_image()], [items[0].prompt], max_new_tokens=2)


def format_table(rows: list[PolicyResult]) -> str:
    """The results as a fixed-width text table, one row per policy."""
    header = ("policy", "CIDEr", "BLEU-4", "exact", "FLOPs red.", "KV read red.", "kept visual",
              "tok/s")
    lines = [(r.label, f"{r.cider:.3f}", f"{r.bleu4:.3f}", f"{r.exact_match:.1%}",
              f"{r.flops_reduction:.1%}", f"{r.kv_read_reduction:.1%}",
              f"{r.mean_kept_visual:.1f}/{r.mean_visual:g}",
              f"{r.tokens_per_s:.1f}") for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, lines)])
