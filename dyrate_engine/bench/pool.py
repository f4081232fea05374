"""``dyrate bench pool``: one estimate of each policy's decode speed-up over Dense from several e2e
runs of the same command, for effects that sit inside one run's noise on a shared machine.

Every round of every run gives one paired ratio (the policy's tokens/s over Dense's in the same
round, as the e2e table's "vs dense"). The pooled figure is the median of all of them, with a
distribution-free 95% interval for that median from binomial order statistics, so that a claim
of "at least X" can be read against how sure the data are.
"""
from __future__ import annotations

import math
import statistics

from .e2e import paired_ratios


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The narrowest symmetric pair of order statistics that holds the median with at least
    ``confidence`` (the sign-test interval); the sample's range when it is too small for that."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    # [xs[j], xs[n-1-j]] misses the median only if at most j of the n values fall on one side
    # of it: probability 2 P(Binomial(n, 1/2) <= j). Take the largest j that keeps it in bounds.
    cdf, j = 0.0, 0
    for i in range(n // 2):
        cdf += math.comb(n, i) / 2**n
        if 2 * cdf > 1 - confidence:
            break
        j = i
    return xs[j], xs[n - 1 - j]


def pooled_ratios(runs: list[dict], base: str = "dense") -> list[dict]:
    """Per (batch, policy) over ``runs`` (e2e JSON results): the paired per-round tokens/s ratios
    against ``base``, pooled, with their median, range and 95% interval for the median."""
    pooled: dict[tuple[int, str], list[float]] = {}
    counts: dict[tuple[int, str], int] = {}
    for run in runs:
        for key, ratios in paired_ratios(run["rows"], base).items():
            pooled.setdefault(key, []).extend(ratios)
            counts[key] = counts.get(key, 0) + 1
    out = []
    for (batch, policy), ratios in sorted(pooled.items()):
        low, high = median_interval(ratios)
        out.append(dict(batch=batch, policy=policy, runs=counts[(batch, policy)],
                        rounds=len(ratios), median=statistics.median(ratios),
                        min=min(ratios), max=max(ratios), ci95=(low, high)))
    return out


def format_pooled(rows: list[dict], base: str = "dense") -> list[str]:
    lines = [f"# decode tokens/s vs {base}, paired per round and pooled over runs",
             f"{'batch':>5} {'policy':<24} {'runs':>4} {'rounds':>6} {'median':>7} "
             f"{'95% CI of median':>17} {'min':>6} {'max':>6}"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"{r['batch']:>5} {r['policy']:<24} {r['runs']:>4} {r['rounds']:>6} "
                     f"{r['median']:>6.3f}x {f'[{lo:.3f}, {hi:.3f}]':>17} {r['min']:>5.2f}x "
                     f"{r['max']:>5.2f}x")
    return lines
