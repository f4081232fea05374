#!/usr/bin/env bash
# Rebuilds the bundled demo from nothing: the VLM (one run from scratch with the engine's
# prefill pruning in the loop, on a mix of the captions and the long-answer detail task), the
# synthetic train/val data of both tasks, the DyRate predictors (trained on both tasks), the one
# kept (chosen on the validation splits of both tasks, never on test), and the quality sweeps of
# both tasks on the test splits with every baseline family.
#
# Usage: scripts/build_demo.sh [WORKDIR]    (default out/demo_build)
#
# A stage whose output already exists in WORKDIR is skipped (the VLM's own checkpoints resume
# an interrupted run), so an interrupted build goes on where it stopped; an evaluation is redone
# when a model or predictor is newer than its results; delete WORKDIR to start over. Each stage
# prints its wall time. Measured on the 2-core dev CPU (python_bench/RESULTS.md):
# the VLM 131 min (with 30-45% of the CPU lost to a neighbour; about 75 alone), each predictor
# about 7 min, the validation and test evaluations a few minutes each.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-out/demo_build}
DEMO=dyrate_engine/demo
STEPS=${STEPS:-1800}
DROP_RATES=${DROP_RATES:-0,0.25,0.5,0.6,0.75,0.9}
RATES=${RATES:-"0,0.25,0.5,0.6,0.65,0.7,0.75,0.9"}
# The predictors: NAME=FLAGS, the flags comma-separated (so no flag value may hold a comma).
# The kept one is the one that saves the most of SAVING (flops_reduction or kv_read_reduction)
# on the validation splits while holding 99% of dense CIDEr on both. The rising-rate recipe (temperature 1.0 -> 0.1, a budget on the
# cost, the step feature spread over 128 steps) at three seeds with each cost: the generation's
# FLOPs, and the KV the decode steps read (train/costs.py says why both); and the FLOPs one at
# learning rate 2e-4.
PREDICTORS=${PREDICTORS:-"budget70_s0=--lam=1,--budget=0.70,--seed=0
budget70_s1=--lam=1,--budget=0.70,--seed=1
budget70_s2=--lam=1,--budget=0.70,--seed=2
kv70_s0=--cost=kv,--lam=1,--budget=0.70,--seed=0
kv70_s1=--cost=kv,--lam=1,--budget=0.70,--seed=1
kv70_s2=--cost=kv,--lam=1,--budget=0.70,--seed=2
budget70_lr2e-4_s0=--lam=1,--budget=0.70,--lr=2e-4,--seed=0"}
SAVING=${SAVING:-flops_reduction}
mkdir -p "$WORK"
export OMP_WAIT_POLICY=PASSIVE  # degrade gently if anything else shares the 2 cores

stage() {  # stage NAME DONE_FILE COMMAND...: run COMMAND unless DONE_FILE exists; time it
  local name=$1 done_file=$2 start=$SECONDS
  shift 2
  if [[ -e $done_file ]]; then echo "== $name: done before ($done_file)"; return; fi
  echo "== $name"
  "$@" < /dev/null
  echo "== $name: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

# 1. The VLM: every weight trained from scratch on generated train scenes (half of each batch
#    from the detail task), each scene pruned after layer 3 at a random rate from the first step
#    (demo/token_drop.py says why).
train_vlm() {  # an interrupted run resumes from its last checkpoint
  if [[ -e $WORK/model/trainer_state.safetensors ]]; then
    $PY -m dyrate_engine.demo.train_vlm --out "$WORK/model" --resume
  else
    $PY -m dyrate_engine.demo.train_vlm --out "$WORK/model" --steps "$STEPS" \
        --prune-layer 3 --drop-rates "$DROP_RATES"
  fi
}
stage "VLM" "$WORK/model/training.json" train_vlm  # written when the run ends
MODEL="$WORK/model"

# 2. Predictor data: train and validation scenes of both tasks as JSONL + PNG (the test split
#    stays unseen); the predictors train on both tasks' train scenes.
make_data() {
  $PY -c "
from dyrate_engine.data.scenes import write_split as w
for task in ('caption', 'detail'):
    w('$WORK/data', 'train', 1024, task); w('$WORK/data', 'val', 256, task)"
  cat "$WORK/data/train.jsonl" "$WORK/data/detail-train.jsonl" > "$WORK/data/mix-train.tmp"
  mv "$WORK/data/mix-train.tmp" "$WORK/data/mix-train.jsonl"  # the stage's mark, when whole
}
stage "data" "$WORK/data/mix-train.jsonl" make_data

# 3. The predictors (prefill ranking: the engine's cache is monotone).
NAMES=()
while IFS='=' read -r name flags; do
  [[ -z $name ]] && continue
  NAMES+=("$name")
  stage "predictor $name" "$WORK/predictor_$name/predictor.json" \
    $PY -m dyrate_engine.cli train-predictor --model "$MODEL" --data "$WORK/data/mix-train.jsonl" \
        --out "$WORK/predictor_$name" --prune-layer 3 --steps 250 --batch-size 8 \
        --ranking prefill --rates "$RATES" --tau-start 1.0 --tau-end 0.1 --step-scale 128 \
        ${flags//,/ }
done <<< "$PREDICTORS"
DYRATE_ARGS=()
for name in "${NAMES[@]}"; do DYRATE_ARGS+=(--dyrate "$WORK/predictor_$name"); done

drop_if_stale() {  # drop evaluation results older than the model or a predictor they evaluate
  local results=$1 input
  [[ -e $results ]] || return 0
  for input in "$MODEL/training.json" "$WORK"/predictor_*/predictor.json; do
    if [[ $input -nt $results ]]; then rm -f "$results"; return 0; fi
  done
}

# 4. Every predictor on both validation splits, beside the fixed rates near their FLOPs.
for task in detail-val:100 val:200; do
  out="$WORK/${task%%:*}"
  drop_if_stale "$out/results.json"
  stage "validation $task" "$out/results.json" \
    $PY -m dyrate_engine.cli eval --model "$MODEL" --data "demo-$task" \
        --policy schedule:3:0.5 --policy schedule:3:0.75 --policy schedule:3:0.9 \
        --policy ramp:3:0.75:0.9:40 "${DYRATE_ARGS[@]}" --no-attention --no-progress \
        --out "$out"
done

# 5. Keep the predictor that saves the most FLOPs (summed over both tasks) while holding 99% of
#    dense CIDEr on both validation splits (the most accurate one if none does).
KEPT=$($PY scripts/pick_predictor.py --saving "$SAVING" "$WORK/detail-val/results.json" \
       "$WORK/val/results.json" -- "${NAMES[@]/#/$WORK/predictor_}")
echo "kept predictor: $KEPT"
rm -rf "$DEMO/model" "$DEMO/predictor"
cp -rL "$MODEL" "$DEMO/model"
cp -rL "$KEPT" "$DEMO/predictor"

# 6. The test-split sweeps of RESULTS.md, one per task, with every family.
BASELINES="--sweep-random 0.5,0.75,0.9 --random-seeds 0,1,2 --sweep-pool 9,8,6,4"
drop_if_stale "$WORK/test_detail/results.json"
drop_if_stale "$WORK/test_caption/results.json"
stage "test: detail" "$WORK/test_detail/results.json" \
  $PY -m dyrate_engine.cli eval --model "$MODEL" --data demo-detail-test:100 --sweep \
      --sweep-rates 0.25,0.5,0.6,0.65,0.7,0.75,0.9 --sweep-layer 3 --sweep-ratios 0.5,0.75 \
      --sweep-fastv-layer 2 $BASELINES --policy ramp:3:0.5:0.9:40 --policy ramp:3:0.75:0.9:40 \
      "${DYRATE_ARGS[@]}" --no-progress --out "$WORK/test_detail"
stage "test: captions" "$WORK/test_caption/results.json" \
  $PY -m dyrate_engine.cli eval --model "$MODEL" --data demo-test:200 --sweep \
      --sweep-rates 0.25,0.5,0.6,0.65,0.7,0.75,0.9 --sweep-layer 3 \
      --sweep-ratios 0.25,0.5,0.75,0.9 --sweep-fastv-layer 2 $BASELINES "${DYRATE_ARGS[@]}" \
      --no-progress --out "$WORK/test_caption"
