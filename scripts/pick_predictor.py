"""Which trained predictor the demo bundles, from `dyrate eval` results on validation splits only.

Usage: python scripts/pick_predictor.py RESULTS.json [RESULTS.json ...] -- PREDICTOR_DIR [...]
(the ``--`` may be left out when every results file ends in ``.json``). Prints the directory of
the predictor that saves the most FLOPs, summed over the results files, among those that hold
99% of dense CIDEr on every one; when none does, the one with the highest mean CIDEr relative to
dense. A predictor's row is found by the label ``dyrate eval`` gives it."""
from __future__ import annotations

import json
import sys

from dyrate_engine.eval import eval_policy
from dyrate_engine.policies import DyRate

HELD = 0.99


def pick(results: list[dict], predictors: list[str]) -> str:
    """The chosen directory of ``predictors`` given the ``results.json`` contents."""
    scored = []
    for directory in predictors:
        label = eval_policy(DyRate.from_pretrained(directory)).label
        held, saved, quality = True, 0.0, 0.0
        for report in results:
            rows = {row["label"]: row for row in report["policies"]}
            if label not in rows:
                raise SystemExit(f"{directory}: no row {label!r} in {report['data']}'s results")
            dense, mine = rows["dense"], rows[label]
            held &= mine["cider"] >= HELD * dense["cider"]
            saved += mine["flops_reduction"]
            quality += mine["cider"] / dense["cider"] / len(results)
        scored.append((held, saved, quality, directory))
    held = [s for s in scored if s[0]]
    best = max(held, key=lambda s: s[1]) if held else max(scored, key=lambda s: s[2])
    return best[3]


def main(argv: list[str]) -> int:
    if "--" in argv:
        cut = argv.index("--")
        files, predictors = argv[:cut], argv[cut + 1:]
    else:
        files = [a for a in argv if a.endswith(".json")]
        predictors = [a for a in argv if not a.endswith(".json")]
    if not files or not predictors:
        raise SystemExit(__doc__)
    results = [json.loads(open(path).read()) for path in files]
    print(pick(results, predictors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
