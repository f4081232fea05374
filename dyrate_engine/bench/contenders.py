"""What an end-to-end benchmark runs: transformers' ``generate`` (``hf``) and the engine under the
policies of the common grammar (``policies.spec``), spelled on the command line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..engine import Engine
from ..engine.static_step import STEPS
from ..policies import POLICY_HELP, DyRate, parse_policy
from ..predictor import RatePredictor

DEFAULT_CONTENDERS = ["hf", "dense", "fastv:2:0.5", "schedule:3:0.5", "schedule:3:0.75",
                      "ramp:3:0.5:0.9", "dyrate"]
CONTENDER_HELP = ("contenders: 'hf' (transformers generate), or the engine under a " + POLICY_HELP
                  + "; a bare 'dyrate' runs --predictor, else an untrained predictor that "
                    "measures cost only; a suffix '@static' or '@dynamic' picks the engine's "
                    "decode step (default: the device's)")


@dataclass
class Contender:
    spec: str
    label: str
    impl: str  # "hf" or "engine"
    make_policy: Callable = lambda: None
    prune_layer: int = 0  # K (n_layers when nothing is pruned)
    note: str = ""
    decode_step: str = "auto"

    def engine(self, engine: Engine) -> Engine:
        """``engine`` with this contender's decode step (the same loaded model)."""
        if self.decode_step == "auto":
            return engine
        return Engine(engine.model, decode_step=self.decode_step,
                      prepack=engine.options.prepack, prefill_prepack=engine.prefill_prepack)


def _untrained_dyrate(engine: Engine, seed: int):
    """DyRate with a seeded, untrained predictor for random-weight models: its rates mean
    nothing, its cost (monitor, features, linear, pruning) is the real one."""
    torch.manual_seed(seed)
    model = RatePredictor(engine.decoder.n_heads).to(engine.device).eval()
    return lambda: DyRate(model, prune_layer=3)


def _label(spec: str) -> str:
    name, *fields = spec.split(":")
    if name == "ramp" and len(fields) >= 3:
        return f"ramp:{fields[0]}:{float(fields[1]):g}->{float(fields[2]):g}"
    return spec


def make_contenders(specs, engine: Engine, new_tokens: int, predictor=None, seed=0
                    ) -> list[Contender]:
    """Contenders from their spellings (``CONTENDER_HELP``), each checked against the model
    before any run."""
    out = []
    n_layers = engine.decoder.n_layers
    for spec in specs:
        spec, _, step = spec.partition("@")
        if step and (step not in STEPS or spec == "hf"):
            raise ValueError(f"{spec}@{step}: the suffix must be one of @"
                             f"{', @'.join(STEPS)}, on an engine contender\n"
                             f"(dyrate bench e2e --policies: {CONTENDER_HELP})")
        name, *fields = spec.split(":")
        if name == "hf":
            out.append(Contender(spec, "hf generate", "hf", prune_layer=n_layers))
            continue
        label, note = _label(spec), ""
        if name == "dyrate" and not fields and not predictor:
            make = _untrained_dyrate(engine, seed)
            label = "dyrate(untrained)"
            note = "untrained random predictor: measures the cost of DyRate's machinery, not its rates"
        else:
            if name == "dyrate" and not fields:
                spec = f"dyrate:{predictor}"
            make = lambda spec=spec: parse_policy(spec, new_tokens=new_tokens)  # noqa: E731
            note = f"trained predictor {spec.split(':', 1)[1]}" if name == "dyrate" else ""
        try:
            policy = make()
        except ValueError as error:
            raise ValueError(f"{error}\n(dyrate bench e2e --policies: {CONTENDER_HELP})") from None
        suffix = f"@{step}" if step else ""
        out.append(Contender(spec + suffix, label + suffix, "engine", make,
                             engine.check_policy(policy), note, step or "auto"))
    return out
