#!/usr/bin/env bash
# Rebuilds the bundled demo from nothing (issue 6): the VLM, the synthetic train/val data, the
# DyRate predictor chosen on the validation split, and the quality sweep on the test split.
# About 70-90 minutes on the 2-core dev CPU. Usage: scripts/build_demo.sh [WORKDIR]
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-out/demo_build}
DEMO=dyrate_engine/demo
STEPS=${STEPS:-1500}
LAMBDAS=${LAMBDAS:-"0.5 1 2"}
mkdir -p "$WORK"
export OMP_WAIT_POLICY=PASSIVE  # degrade gently if anything else shares the 2 cores

# 1. The VLM: every weight trained from scratch on generated train scenes.
$PY -m dyrate_engine.demo.train_vlm --out "$DEMO/model" --steps "$STEPS"

# 2. Predictor data: train and validation scenes as JSONL + PNG (the test split stays unseen).
$PY -c "from dyrate_engine.demo.scenes import write_split as w; w('$WORK/data', 'train', 1024); w('$WORK/data', 'val', 256)"

# 3. One predictor per lambda; the validation split picks the one that is kept.
for lam in $LAMBDAS; do
  $PY -m dyrate_engine.cli train-predictor --model demo --data "$WORK/data/train.jsonl" \
      --out "$WORK/predictor_lam$lam" --lam "$lam" --layer 3 --steps 300 --batch-size 8
done
