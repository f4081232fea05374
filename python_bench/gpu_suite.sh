#!/usr/bin/env bash
# The GPU suite in one command, for a GPU machine where nothing can be installed (torch, triton,
# transformers, pytest, ninja, pybind11 and nvcc present): builds the CUDA extension, checks that
# the compiled and Triton kernels serve CUDA, runs the CUDA tests (kernels, the static decode step
# under CUDA graphs), the end-to-end benchmark at LLaVA-1.5-7B shape (random bf16 weights, batch
# 1, 8, 32, 64; Dense, Schedule(0.75) and DyRate's machinery against transformers), the op
# microbenchmarks, and compute-sanitizer (memcheck, racecheck, initcheck) over the op tests with what time is
# left, writing everything into OUTDIR. About 8 minutes on an H100: every stage runs under
# `timeout`, capped by what is left of SUITE_BUDGET_S.
#
#   python_bench/gpu_suite.sh OUTDIR             # on the GPU machine
#   python_bench/gpu_suite.sh --dry-run OUTDIR   # anywhere: CUDA build skipped, the CUDA tests
#                                                # collected (they skip without a GPU), tiny sizes
#                                                # on the CPU
# Environment: PYTHON (default: python3, else python, on PATH), SUITE_BUDGET_S (default 470 s in all).
# OUTDIR gets: env.txt (machine, versions, commit), one log per stage, status.txt (rc and seconds
# per stage), e2e_<preset>.json / .png, ops_<device>.json. A failed or timed-out stage is
# recorded and the suite goes on; the exit status is 1 if any stage failed.
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:?usage: python_bench/gpu_suite.sh [--dry-run] OUTDIR}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET="${SUITE_BUDGET_S:-470}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.." || exit 1
START=$SECONDS
FAILED=0
: > "$OUT/status.txt"

stage() {  # stage NAME CAP_SECONDS COMMAND...: run under timeout, log to OUT/NAME.log
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    ((cap > left)) && cap=$left
    if ((cap <= 0)); then
        echo "$name: skipped, time budget spent" | tee -a "$OUT/status.txt"
        FAILED=1
        return
    fi
    echo "== $name (timeout ${cap} s): $*"
    local t0=$SECONDS
    timeout --kill-after=15 "$cap" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    local note=""
    ((rc == 124 || rc == 137)) && note=" (timed out)"
    echo "$name: rc $rc$note, $((SECONDS - t0)) s" | tee -a "$OUT/status.txt"
    ((rc != 0)) && FAILED=1
}

{
    echo "date: $(date -Iseconds)"
    echo "host: $(hostname), $(nproc) cpus"
    echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "dry run: $DRY"
    "$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('transformers', transformers.__version__)"
    "$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not importable"
    command -v nvcc >/dev/null && nvcc --version | tail -1
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

BENCH=("$PY" -m dyrate_engine.cli bench)
if ((DRY)); then
    echo "build: skipped (dry run)" | tee -a "$OUT/status.txt"
    stage cuda_tests 120 "$PY" -m pytest -q -m cuda tests
    stage e2e 180 "${BENCH[@]}" e2e --preset tiny --batch 1,2 --new-tokens 4 --repeats 2 \
        --threads 1 --policies hf dense dense@static schedule:3:0.75@static --out "$OUT"
    stage ops 120 "${BENCH[@]}" ops --device cpu --shape tiny --batch 1,2 --repeats 3 \
        --json "$OUT/ops_cpu.json"
else
    # No network: no build isolation, no dependency resolution; MAX_JOBS parallelises nvcc.
    stage build 210 env DYRATE_CUDA=1 MAX_JOBS="$(nproc)" "$PY" -m pip install \
        --no-build-isolation --no-deps -e .
    # decode_linear is cuBLAS (F.linear) on CUDA by design; decode_attention* are Triton kernels.
    stage kernels 30 "$PY" -c "import dyrate_engine.ops as o; b = o.backends(); print(b); \
want = {n: 'triton' if n.startswith('decode_attention') else 'extension' for n in b if n != 'decode_linear'}; \
bad = {n: b[n]['cuda'] for n in want if b[n]['cuda'] != want[n]}; \
assert not bad, f'CUDA kernels missing, the references would be measured: {bad}'"
    stage cuda_tests 100 "$PY" -m pytest -q -m cuda tests
    stage e2e 240 "${BENCH[@]}" e2e --preset llava-1.5-7b --batch 1,8,32,64 \
        --policies hf dense schedule:3:0.75 dyrate --out "$OUT"
    stage ops 60 "${BENCH[@]}" ops --device cuda --batch 1,8,32 --json "$OUT/ops_cuda.json"
    if (( $(nvidia-smi -L 2>/dev/null | wc -l) >= 2 )); then
        stage tp2 180 env PY="$PY" bash python_bench/tp_check.sh "$OUT/tp"
    else
        echo "tp2: fewer than 2 GPUs, skipped (on 2+: python_bench/tp_check.sh DIR)" \
            | tee -a "$OUT/status.txt"
    fi
    if command -v compute-sanitizer >/dev/null; then
        OP_TESTS=(tests/test_attention_scores.py tests/test_select_keep.py tests/test_compact_kv.py
                  tests/test_decode_attention.py)
        for tool in memcheck racecheck initcheck; do
            stage "sanitizer_$tool" 60 compute-sanitizer --tool "$tool" --error-exitcode 1 \
                "$PY" -m pytest -q -x -m cuda "${OP_TESTS[@]}"
        done
    else
        echo "compute-sanitizer: not found, skipped" | tee -a "$OUT/status.txt"
    fi
fi
echo "== done in $((SECONDS - START)) s; status:"
cat "$OUT/status.txt"
exit $FAILED
