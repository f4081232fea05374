"""``dyrate bench compare``: do two end-to-end runs agree within their own spread?"""
from __future__ import annotations

from .report import TIMED

# Exact counts: equal in every run.
EXACT = ["kv_allocated_bytes", "kv_final_bytes", "flops_vs_dense", "decode_flops_vs_dense"]
# Peak resident memory on a CPU moves by a few pages between identical calls: 1% slack.
SLACK = {"peak_mem_mb": 0.01}


def _overlap(a, b, tolerance):
    lo = lambda v: v["min"] * (1 - tolerance)  # noqa: E731
    hi = lambda v: v["max"] * (1 + tolerance)  # noqa: E731
    return lo(a) <= hi(b) and lo(b) <= hi(a)


def _fmt(v):
    return f"{v['median']:.4g} [{v['min']:.4g}, {v['max']:.4g}]"


def compare(a: dict, b: dict, tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """Do two e2e runs agree? For each (batch, policy) in both, each timed metric and ratio:
    their [min, max] ranges over the repeats overlap (widened by ``tolerance``, relative, and
    by ``SLACK``). Exact counts (FLOPs, KV bytes, kept visual tokens) must be equal. One line per
    row: its tokens/s in both runs and whatever disagrees."""
    lines = []
    for key in ("preset", "new_tokens", "repeats", "device", "dtype"):
        if a.get(key) != b.get(key):
            lines.append(f"note: {key} differs: {a.get(key)} vs {b.get(key)}")
    rows_b = {(r["batch"], r["policy"]): r for r in b["rows"]}
    ok, matched = True, 0
    for ra in a["rows"]:
        rb = rows_b.get((ra["batch"], ra["policy"]))
        if rb is None:
            continue
        matched += 1
        pairs = [(k, ra["metrics"][k], rb["metrics"][k]) for k in TIMED]
        pairs += [(k, ra[k], rb[k]) for k in ("vs_dense", "vs_hf") if k in ra and k in rb]
        diffs = []
        for name, x, y in pairs:
            if not _overlap(x, y, tolerance + SLACK.get(name, 0.0)):
                rel = (y["median"] - x["median"]) / x["median"] if x["median"] else 0.0
                diffs.append(f"{name} {_fmt(x)} vs {_fmt(y)} ({rel:+.0%})")
        for name in EXACT + ["kept_visual_by_step"]:
            if ra[name] != rb[name]:
                diffs.append(f"{name} {ra[name]} vs {rb[name]} (exact)")
        ok &= not diffs
        head = (f"{'DIFF' if diffs else 'ok  '} batch {ra['batch']:>3} {ra['label']:<22} tokens/s "
                f"{_fmt(ra['metrics']['tokens_per_s'])} vs {_fmt(rb['metrics']['tokens_per_s'])}")
        lines.append(head + "".join(f"\n       {d}" for d in diffs))
    if not matched:
        ok = False
        lines.append("DIFF: the two runs have no (batch, policy) in common")
    lines.append(f"{'AGREE' if ok else 'DISAGREE'}: {matched} rows compared; agreement = the "
                 f"[min, max] ranges over the repeats overlap"
                 + (f" (widened by {tolerance:.0%})" if tolerance else ""))
    return ok, lines
