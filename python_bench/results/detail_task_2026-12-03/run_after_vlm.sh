#!/usr/bin/env bash
# Experiments on the retrained demo VLM (outside the repository's scripts; outputs copied into
# python_bench/results/detail_task_2026-12-03/ afterwards).
set -uo pipefail
cd /work/main
PY=.venv/bin/python
W=/work/scratch/demo_build
M=$W/model
export OMP_WAIT_POLICY=PASSIVE
date -u
$PY -m dyrate_engine.cli eval --model $M --data demo-test:200 --sweep --sweep-rates 0.5,0.6,0.7,0.75,0.9 \
  --sweep-layer 3 --sweep-ratios 0.5 --sweep-fastv-layer 2 --no-attention --no-progress --out $W/eval_caption_test > $W/eval_caption_test.txt 2>&1
date -u
$PY -m dyrate_engine.cli eval --model $M --data demo-detail-test:50 --sweep --sweep-rates 0.5,0.75,0.9 \
  --sweep-layer 3 --sweep-ratios 0.5 --sweep-fastv-layer 2 --sweep-random 0.75 --random-seeds 0,1,2 \
  --sweep-pool 8,6 --policy ramp:3:0.5:0.9:40 --no-progress --out $W/eval_detail_test > $W/eval_detail_test.txt 2>&1
date -u
$PY python_bench/bench_prefill_last_row.py --preset cpu-vllm --batch 1 --rounds 10 > $W/prefill_last_row.txt 2>&1
date -u
