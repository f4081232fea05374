#!/usr/bin/env bash
# Tensor parallelism on GPUs (needs 2+): the cpu preset's random model saved as a checkpoint,
# answered by one process and by `torchrun --nproc-per-node 2 ... --tp 2` (NCCL), in fp32 and
# greedy; the two answers must be equal. gpu_suite.sh runs it when the machine has 2+ GPUs.
#   PY=.venv/bin/python [DEVICE=cpu] python_bench/tp_check.sh WORKDIR
set -euo pipefail
PY="${PY:-python}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu runs the same check over gloo
WORK="${1:?usage: tp_check.sh WORKDIR}"
mkdir -p "$WORK"
"$PY" -m dyrate_engine.cli bench save-preset --preset cpu --out "$WORK/ckpt" >/dev/null
IMAGE="$("$PY" -c 'from dyrate_engine.bundled import EXAMPLE_IMAGE; print(EXAMPLE_IMAGE)')"
ARGS=(-m dyrate_engine.cli generate --model "$WORK/ckpt" --image "$IMAGE" --prompt "describe"
      --policy schedule:3:0.75 --device "$DEVICE" --max-new-tokens 24)
"$PY" "${ARGS[@]}" >"$WORK/tp1.txt"
"$PY" -m torch.distributed.run --nproc-per-node 2 "${ARGS[@]}" --tp 2 >"$WORK/tp2.txt"
if diff "$WORK/tp1.txt" "$WORK/tp2.txt"; then
    echo "tp=2 equals one process on $DEVICE: $(head -c 80 "$WORK/tp1.txt")"
else
    echo "tp=2 differs from one process on $DEVICE" >&2
    exit 1
fi
