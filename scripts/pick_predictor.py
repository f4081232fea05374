"""Which trained predictor the demo bundles, from `dyrate eval` results on validation splits only.

Usage: python scripts/pick_predictor.py [--saving flops_reduction|kv_read_reduction]
           RESULTS.json [RESULTS.json ...] -- PREDICTOR_DIR [...]
(the ``--`` may be left out when every results file ends in ``.json``). Prints the directory of
the predictor with the largest saving (default the FLOPs reduction), summed over the results
files, among those that hold 99% of dense CIDEr on every one; when none does, the one with the
highest mean CIDEr relative to dense. A predictor's row is the one ``dyrate eval`` loaded from
its directory (labels may repeat)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HELD = 0.99
SAVINGS = ("flops_reduction", "kv_read_reduction")


def pick(results: list[dict], predictors: list[str], saving: str = "flops_reduction") -> str:
    """The chosen directory of ``predictors`` given the ``results.json`` contents."""
    if saving not in SAVINGS:
        raise ValueError(f"saving must be one of {SAVINGS}, got {saving!r}")
    scored = []
    for directory in predictors:
        source = str(Path(directory).resolve())
        held, saved, quality = True, 0.0, 0.0
        for report in results:
            rows = [row for row in report["policies"]
                    if row.get("source") and str(Path(row["source"]).resolve()) == source]
            if len(rows) != 1:
                raise SystemExit(f"{directory}: {len(rows)} rows loaded from it in "
                                 f"{report['data']}'s results, not 1")
            dense = next(row for row in report["policies"] if row["family"] == "dense")
            mine = rows[0]
            held &= mine["cider"] >= HELD * dense["cider"]
            saved += mine[saving]
            quality += mine["cider"] / dense["cider"] / len(results)
        scored.append((held, saved, quality, directory))
    held = [s for s in scored if s[0]]
    best = max(held, key=lambda s: s[1]) if held else max(scored, key=lambda s: s[2])
    return best[3]


def main(argv: list[str]) -> int:
    saving, rest = "flops_reduction", list(argv)
    if rest[:1] == ["--saving"] and len(rest) > 1:
        saving, rest = rest[1], rest[2:]
    if "--" in rest:
        cut = rest.index("--")
        files, predictors = rest[:cut], rest[cut + 1:]
    else:
        files = [a for a in rest if a.endswith(".json")]
        predictors = [a for a in rest if not a.endswith(".json")]
    if not files or not predictors:
        raise SystemExit(__doc__)
    results = [json.loads(Path(path).read_text()) for path in files]
    try:
        print(pick(results, predictors, saving))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
