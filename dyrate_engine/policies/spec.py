"""The command-line spelling of a policy, one grammar for ``dyrate generate``, ``dyrate eval`` and
``dyrate bench``."""
from __future__ import annotations

from .base import Dense, Policy
from .dyrate import DyRate
from .fastv import FastV
from .random_keep import RandomKeep
from .schedule import Schedule

POLICY_HELP = ("pruning policy: 'dense'; 'fastv[:K[:RATIO]]' (default 2:0.5); "
               "'schedule:K:R0[,R1,...]' (rate of step t is R[min(t, last)]); "
               "'ramp:K:R0:R1[:STEPS]' (a schedule rising linearly from R0 at the prefill to R1 "
               "after STEPS steps, default half the new tokens); "
               "'random:K:R0[,R1,...][:SEED]' (a schedule's rates, keeping random visual tokens; "
               "seed 0 by default); "
               "'dyrate[:DIR]' (a trained predictor directory; default: the demo's)")


def ramp(prune_layer: int, start: float, end: float, steps: int) -> Schedule:
    """A Schedule whose rate rises linearly from ``start`` at the prefill to ``end`` at step
    ``steps``, so that visual tokens drop while decoding."""
    if steps < 1:
        raise ValueError(f"ramp: STEPS must be >= 1, got {steps}")
    schedule = Schedule([start + (end - start) * t / steps for t in range(steps + 1)],
                        prune_layer)
    schedule.name = f"ramp(K={prune_layer},{start:g}->{end:g}@{steps})"  # not every step's rate
    return schedule


def parse_policy(spec: str, *, new_tokens: int | None = None) -> Policy:
    """A policy from its spelling (see ``POLICY_HELP``); ``new_tokens`` sets a ramp's default
    length. A ValueError names the bad spelling."""
    name, *fields = spec.split(":")
    try:
        if name == "dense" and not fields:
            return Dense()
        if name == "fastv" and len(fields) <= 2:
            layer = int(fields[0]) if fields else 2
            return FastV(layer, ratio=float(fields[1]) if len(fields) > 1 else 0.5)
        if name == "dyrate" and len(fields) <= 1:
            return DyRate.from_pretrained(fields[0] if fields else "demo")
        if name == "schedule" and len(fields) == 2:
            return Schedule([float(r) for r in fields[1].split(",")], int(fields[0]))
        if name == "random" and len(fields) in (2, 3):
            seed = int(fields[2]) if len(fields) == 3 else 0
            return RandomKeep([float(r) for r in fields[1].split(",")], int(fields[0]), seed=seed)
        if name == "ramp" and len(fields) in (3, 4):
            steps = int(fields[3]) if len(fields) == 4 else max(1, (new_tokens or 32) // 2)
            return ramp(int(fields[0]), float(fields[1]), float(fields[2]), steps)
    except ValueError as error:
        raise ValueError(f"bad policy {spec!r}: {error}") from None
    raise ValueError(f"unknown policy {spec!r}; {POLICY_HELP}")
