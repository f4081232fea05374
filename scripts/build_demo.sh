#!/usr/bin/env bash
# Rebuilds the bundled demo from nothing: the VLM (one run from scratch with the engine's
# prefill pruning in the loop), the synthetic train/val data, one DyRate predictor per lambda, the
# one kept (chosen on the validation split), and the quality sweep on the test split. About 1.7
# hours on the 2-core dev CPU, summed from its parts (the VLM 62 minutes; not run end to end).
# Usage: scripts/build_demo.sh [WORKDIR]
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-out/demo_build}
DEMO=dyrate_engine/demo
STEPS=${STEPS:-1800}
DROP_RATES=${DROP_RATES:-0,0.25,0.5,0.6,0.75,0.9}
LAMBDAS=${LAMBDAS:-"0.02 0.03 0.04 0.05 0.1 0.25"}
RATES=${RATES:-"0,0.25,0.5,0.6,0.65,0.7,0.75,0.9"}
mkdir -p "$WORK"
export OMP_WAIT_POLICY=PASSIVE  # degrade gently if anything else shares the 2 cores

# 1. The VLM: every weight trained from scratch on generated train scenes, each scene pruned after
#    layer 3 at a random rate from the first step (demo/token_drop.py says why).
$PY -m dyrate_engine.demo.train_vlm --out "$WORK/model" --steps "$STEPS" \
    --prune-layer 3 --drop-rates "$DROP_RATES"
rm -rf "$DEMO/model" && cp -r "$WORK/model" "$DEMO/model"

# 2. Predictor data: train and validation scenes as JSONL + PNG (the test split stays unseen).
$PY -c "from dyrate_engine.data.scenes import write_split as w; w('$WORK/data', 'train', 1024); w('$WORK/data', 'val', 256)"

# 3. One predictor per lambda, each scored on the validation split.
for lam in $LAMBDAS; do
  $PY -m dyrate_engine.cli train-predictor --model demo --data "$WORK/data/train.jsonl" \
      --out "$WORK/predictor_lam$lam" --lam "$lam" --prune-layer 3 --steps 250 --batch-size 8 \
      --ranking prefill --rates "$RATES"
  $PY -m dyrate_engine.cli eval --model demo --data demo-val:256 --dyrate "$WORK/predictor_lam$lam" \
      --no-attention --no-progress --out "$WORK/val_lam$lam"
done

# 4. Keep the predictor that saves the most FLOPs while holding 99% of dense CIDEr on validation
#    (the most accurate one if none does).
BEST=$($PY - "$WORK" $LAMBDAS <<'EOF'
import json, sys
work, lams = sys.argv[1], sys.argv[2:]
scored = []
for lam in lams:
    rows = json.load(open(f"{work}/val_lam{lam}/results.json"))["policies"]
    dense = next(r for r in rows if r["family"] == "dense")
    mine = next(r for r in rows if r["family"] == "dyrate")
    scored.append((mine["cider"] >= 0.99 * dense["cider"], mine["flops_reduction"], mine["cider"], lam))
held = [s for s in scored if s[0]]
best = max(held, key=lambda s: s[1]) if held else max(scored, key=lambda s: s[2])
print(best[3])
EOF
)
echo "kept predictor: lambda $BEST"
rm -rf "$DEMO/predictor" && cp -r "$WORK/predictor_lam$BEST" "$DEMO/predictor"

# 5. The test-split sweep of RESULTS.md.
DYRATE_ARGS=$(for lam in $LAMBDAS; do printf -- "--dyrate %s " "$WORK/predictor_lam$lam"; done)
$PY -m dyrate_engine.cli eval --model demo --data demo-test:200 --sweep \
    --sweep-rates 0.25,0.5,0.6,0.65,0.7,0.75,0.9 --sweep-layer 3 --sweep-ratios 0.25,0.5,0.75,0.9 \
    --sweep-fastv-layer 2 $DYRATE_ARGS --out "$WORK/quality_test"
