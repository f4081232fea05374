"""End-to-end training of DyRate's rate predictor (arXiv 2501.14204, Sec. 3.3) with the
Gumbel-Softmax trick: loss = answer cross-entropy under the sampled pruning + λ · the expected FLOPs
ratio of the whole generation (prefill and every decode step, from the engine's exact FLOPs model).
The VLM is frozen by default; ``unfreeze_layers`` lets pruned layers adapt too."""
from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..deprecation import renamed_keyword
from ..models.base import VisionLanguageModel
from ..predictor import DEFAULT_RATES, RatePredictor, rate_features
from .costs import COSTS, cost_table, flops_table
from .examples import Example, TeacherBatch, adapter, collate
from .masked_forward import (answer_rows, deepstack, embed, keep_masks, monitor_pass,
                             pruned_pass, step_rows)


@dataclass
class TrainConfig:
    """``lam``: weight of the expected cost ratio (the quality/compute knob); ``cost``: what is
    counted, the FLOPs of the whole generation or the KV read by the decode steps
    (``train.costs``). With ``budget`` set, only the part of the expected ratio above it is
    penalised (the budget form of the penalty)."""

    rates: tuple = DEFAULT_RATES
    prune_layer: int = 3  # K, the first pruned layer; the monitor layer is K-1
    lam: float = 1.0
    budget: float | None = None
    cost: str = "flops"
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-2
    tau_start: float = 1.0  # Gumbel-Softmax temperature, annealed geometrically to tau_end
    tau_end: float = 0.2
    step_scale: float = 32.0
    seed: int = 0
    unfreeze_layers: tuple = ()
    unfreeze_lr: float = 1e-4
    cache_monitor: bool = True  # precompute the frozen layers once (see precompute_monitor)
    # Which scores rank the visual tokens of answer row t: "step" (row t's own, as the paper
    # describes) or "prefill" (the last prompt token's, for every row). The engine's cache is
    # monotone: tokens dropped at the prefill never return, so with "step" a row may read tokens
    # the engine no longer has; "prefill" matches the engine exactly for a constant rate.
    ranking: str = "step"
    history: list = field(default_factory=list, repr=False)

    def tau(self, step: int) -> float:
        frac = step / max(1, self.steps - 1)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac


def _deprecated_layer(cfg: TrainConfig) -> int:
    warnings.warn("TrainConfig.layer is deprecated; read prune_layer", DeprecationWarning,
                  stacklevel=2)
    return cfg.prune_layer


_dataclass_init = TrainConfig.__init__


def _deprecated_flops_budget(cfg: TrainConfig) -> float | None:
    warnings.warn("TrainConfig.flops_budget is deprecated; read budget", DeprecationWarning,
                  stacklevel=2)
    return cfg.budget


def _init_taking_layer(self, *args, layer=None, flops_budget=None, **kwargs):
    # The deprecated layer= and flops_budget= are taken here rather than as init-only fields,
    # so that dataclasses.replace and asdict see the new names only.
    if layer is not None or "prune_layer" in kwargs:
        kwargs["prune_layer"] = renamed_keyword("TrainConfig", "layer", "prune_layer", layer,
                                                kwargs.get("prune_layer"), default=3)
    if flops_budget is not None:
        kwargs["budget"] = renamed_keyword("TrainConfig", "flops_budget", "budget", flops_budget,
                                           kwargs.get("budget"))
    _dataclass_init(self, *args, **kwargs)


# Set after the dataclass is built: read access under the old names, and their keywords.
TrainConfig.layer = property(_deprecated_layer)
TrainConfig.flops_budget = property(_deprecated_flops_budget)
TrainConfig.__init__ = _init_taking_layer


def step_index(batch: TeacherBatch, T: int) -> torch.Tensor:
    """Decode step of each row ``[B, T]`` (0 for the last prompt token and before)."""
    t = torch.arange(T, device=batch.input_ids.device)[None]
    return (t - (batch.prompt_len[:, None] - 1)).clamp(min=0)


def predictor_logits(model: VisionLanguageModel, predictor: RatePredictor, batch: TeacherBatch,
                     K: int):
    """Hidden states after the monitor layer, rate logits ``[B, T, R]`` and the visual scores."""
    if batch.monitor is not None:
        h, type_mass, vis_scores = batch.monitor
    else:
        h, type_mass, vis_scores = monitor_pass(model.decoder, embed(model, batch), batch, K,
                                                deepstack(model, batch, range(K)))
    features = rate_features(predictor.spec, type_mass, step_index(batch, h.shape[1]))
    return h, predictor(features.to(predictor.linear.weight.dtype)), vis_scores


def masked_loss(model: VisionLanguageModel, predictor, batch: TeacherBatch, cfg: TrainConfig,
                tau: float | None):
    """One forward: ``(loss, metrics)``. ``tau=None`` evaluates with hard argmax choices (and
    their FLOPs, where training uses the expectation under the predicted distribution)."""
    model = adapter(model)
    dec, K = model.decoder, cfg.prune_layer
    h, logits, vis_scores = predictor_logits(model, predictor, batch, K)
    B, T, R = logits.shape
    soft = logits.float().softmax(-1)
    if tau is None:
        y = F.one_hot(logits.argmax(-1), R).float()
    else:
        y = F.gumbel_softmax(logits.float(), tau=tau, hard=True)  # straight-through
    if cfg.ranking == "prefill":  # every row ranks by the last prompt token's scores
        first = (batch.prompt_len - 1)[:, None, None].expand_as(vis_scores)
        vis_scores = vis_scores.gather(1, first)
    masks = keep_masks(vis_scores, batch.n_visual, cfg.rates)  # [B, T, R, Nv]
    rows = step_rows(batch, T)  # prompt rows take step 0's choice, as the prefill does
    keep_rows = masks.gather(1, rows[:, :, None, None].expand_as(masks))
    weights = y.gather(1, rows[:, :, None].expand_as(y))
    lm_logits = pruned_pass(dec, h, batch, K, keep_rows, weights,
                            deepstack(model, batch, range(K, dec.n_layers)))
    answer = answer_rows(batch, T)
    targets = batch.input_ids.roll(-1, dims=1)
    ce = F.cross_entropy(lm_logits[answer].float(), targets[answer])
    table, dense = cost_table(cfg.cost, dec, batch, K, cfg.rates)
    # Training penalises the expected cost under the predicted distribution; evaluation
    # reports the cost of the hard choices actually made.
    weights = soft if tau is not None else y
    # clamp: under "kv" a batch of one-token answers reads nothing, and 0 / 0 would be NaN
    expected = (weights.double() * table).sum() / dense.sum().clamp_min(1)
    penalty = expected if cfg.budget is None else F.relu(expected - cfg.budget)
    loss = ce + cfg.lam * penalty.float()
    rate_values = torch.tensor(cfg.rates, device=logits.device)
    hard = rate_values[logits.argmax(-1)][answer]
    metrics = {"loss": float(loss.detach()), "ce": float(ce.detach()),
               cfg.cost: float(expected.detach()),
               "rate": float((soft.detach() @ rate_values)[answer].mean()),
               "hard_rate": float(hard.mean())}
    return loss, metrics


@torch.no_grad()
def precompute_monitor(model: VisionLanguageModel, examples: list[Example], K: int,
                       batch_size: int = 16, progress: bool = False) -> list[Example]:
    """Examples carrying the frozen layers' outputs (vision tower, layers < K, the monitor's
    statistics), so training steps run only the pruned layers. Exact: a row of a right-padded
    causal batch equals the unpadded row. Costs ``T x (d + 4H + Nv)`` floats per example."""
    model = adapter(model)
    out = []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="frozen layers", unit="batch", disable=not progress):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk, model).to(model.device)
        h, type_mass, vis_scores = monitor_pass(model.decoder, embed(model, batch), batch, K,
                                                deepstack(model, batch, range(K)))
        for i, (e, layout) in enumerate(zip(chunk, batch.layouts)):
            T, n_visual = len(e.prompt_ids) + len(e.answer_ids), layout.n_visual
            out.append(Example(e.prompt_ids, e.answer_ids, e.pixel_values,
                               (h[i, :T].clone(), type_mass[i, :T].clone(),
                                vis_scores[i, :T, :n_visual].clone()), e.extra))
    return out


def _batches(examples: list[Example], batch_size: int, rng: random.Random):
    order = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more
        yield [examples[i] for i in order[:batch_size]]
        order = order[batch_size:]


def train_predictor(model: VisionLanguageModel, examples: list[Example], cfg: TrainConfig,
                    predictor: RatePredictor | None = None, progress: bool = True) -> RatePredictor:
    """Train (or go on training) a predictor on ``examples``; ``cfg.history`` gets the metrics of
    every step."""
    model = adapter(model)
    dec = model.decoder
    if not 1 <= cfg.prune_layer < dec.n_layers:
        raise ValueError(f"prune_layer K must be in [1, {dec.n_layers - 1}], got "
                         f"{cfg.prune_layer}")
    if not examples:
        raise ValueError("no training examples")
    if cfg.cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cfg.cost!r}")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if predictor is None:
        predictor = RatePredictor(dec.n_heads, cfg.rates, cfg.step_scale)
        torch.nn.init.zeros_(predictor.linear.weight)  # uniform choice: the sampler explores
        torch.nn.init.zeros_(predictor.linear.bias)
    predictor.to(model.device)
    params = [{"params": predictor.parameters(), "lr": cfg.lr}]
    unfrozen = _unfreeze(dec, cfg)
    if unfrozen:
        params.append({"params": unfrozen, "lr": cfg.unfreeze_lr})
    optimizer = torch.optim.Adam(params)
    if cfg.cache_monitor:
        examples = precompute_monitor(model, examples, cfg.prune_layer, progress=progress)
    batches = _batches(examples, cfg.batch_size, rng)
    bar = tqdm(range(cfg.steps), desc="predictor", unit="step", disable=not progress)
    predictor.train()
    with torch.enable_grad():
        for step in bar:
            batch = collate(next(batches), model).to(model.device)
            loss, metrics = masked_loss(model, predictor, batch, cfg, cfg.tau(step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            cfg.history.append({"step": step, **metrics})
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", rate=f"{metrics['rate']:.2f}",
                            **{cfg.cost: f"{metrics[cfg.cost]:.2f}"})
    for p in unfrozen:
        p.requires_grad_(False)
    return predictor.eval()


@torch.no_grad()
def evaluate(model: VisionLanguageModel, predictor, examples: list[Example], cfg: TrainConfig,
             batch_size: int = 16) -> dict:
    """Hard-choice (argmax) metrics on held-out examples: cross-entropy, mean rate, and the cost
    ratio under its name (``"flops"`` or ``"kv"``, ``cfg.cost``)."""
    model = adapter(model)
    totals, n = {}, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk, model).to(model.device)
        _, metrics = masked_loss(model, predictor, batch, cfg, tau=None)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk)
        n += len(chunk)
    return {k: v / n for k, v in totals.items()}


@torch.no_grad()
def teacher_forced_rates(model: VisionLanguageModel, predictor, batch: TeacherBatch,
                         prune_layer: int | None = None, *, layer: int | None = None
                         ) -> list[list[float]]:
    """The hard rate the predictor picks at each answer step of each sequence, teacher-forced."""
    prune_layer = renamed_keyword("teacher_forced_rates", "layer", "prune_layer", layer,
                                  prune_layer)
    if prune_layer is None:
        raise TypeError("teacher_forced_rates() needs prune_layer (K, the first pruned layer)")
    _, logits, _ = predictor_logits(adapter(model), predictor, batch, prune_layer)
    answer = answer_rows(batch, logits.shape[1])
    rates = predictor.rate_values[logits.argmax(-1)]
    return [rates[b][answer[b]].tolist() for b in range(len(rates))]


def _unfreeze(dec, cfg: TrainConfig) -> list[torch.Tensor]:
    tensors = []
    for i in cfg.unfreeze_layers:
        if not cfg.prune_layer <= i < dec.n_layers:
            raise ValueError(f"only pruned layers [{cfg.prune_layer}, {dec.n_layers - 1}] can be "
                             f"unfrozen (layers < K must stay as the monitor sees them), got {i}")
        layer = dec.layers[i]
        for name in ("qkv", "o", "gate_up", "down", "input_norm", "post_norm"):
            tensors.append(getattr(layer, name).requires_grad_(True))
    return tensors


def config_record(cfg: TrainConfig) -> dict:
    record = asdict(cfg)
    record.pop("history")
    record["rates"] = list(cfg.rates)
    record["unfreeze_layers"] = list(cfg.unfreeze_layers)
    return record


__all__ = ["TrainConfig", "train_predictor", "evaluate", "teacher_forced_rates", "masked_loss",
           "flops_table", "config_record"]
