#!/usr/bin/env bash
# Compile check of the CUDA kernels without a GPU (docs/DESIGN.md, "Build"): every csrc/**/*.cu is
# compiled with `nvcc -c` for sm_90 and sm_80 against the torch headers of $PYTHON (default
# `python`), two files at a time. Prints one line per file with its time; exits non-zero if any
# file fails (its compiler output is printed). Objects go to a temporary directory.
#
# Flags mirror torch.utils.cpp_extension.CUDAExtension (C++20 for torch >= 2.13 headers, and the
# __CUDA_NO_HALF*/BFLOAT16 conversion macros it always sets), plus C10_CUDA_NO_CMAKE_CONFIGURE_FILE
# because the CPU wheel lacks c10/cuda/impl/cuda_cmake_macros.h.
#   PYTHON=.venv/bin/python scripts/cuda_check.sh            # all files
#   PYTHON=.venv/bin/python scripts/cuda_check.sh csrc/cuda/select_keep.cu
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/bin/nvcc)}"
JOBS="${JOBS:-2}"

INCLUDES="$("$PYTHON" -c '
import os, sysconfig, torch
print(os.path.join(os.path.dirname(torch.__file__), "include"))
print(sysconfig.get_paths()["include"])')" || { echo "cannot import torch with $PYTHON" >&2; exit 1; }
TORCH_INC="$(sed -n 1p <<<"$INCLUDES")"
PY_INC="$(sed -n 2p <<<"$INCLUDES")"

if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  mapfile -t FILES < <(cd "$ROOT" && find csrc -name '*.cu' | sort)
fi
if [ "${#FILES[@]}" -eq 0 ]; then
  echo "no .cu files under csrc/" >&2
  exit 1
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

export ROOT NVCC OUT TORCH_INC PY_INC
compile_one() {
  local src="$1" name log start rc
  name="$(echo "${src#"$ROOT"/}" | tr '/' '_')"
  log="$OUT/$name.log"
  start=$(date +%s%N)
  set +e
  case "$src" in /*) ;; *) src="$ROOT/$src" ;; esac
  "$NVCC" -c "$src" -o "$OUT/$name.o" \
    -std=c++20 -O3 --expt-relaxed-constexpr \
    -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80 \
    -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
    -Xcompiler -Wall -Xcompiler -Wno-unknown-pragmas \
    -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" -I"$PY_INC" -I"$ROOT/csrc" \
    >"$log" 2>&1
  rc=$?
  set -e
  local ms=$((($(date +%s%N) - start) / 1000000)) status=ok
  [ "$rc" -eq 0 ] || status=FAILED
  [ "$rc" -ne 0 ] || [ ! -s "$log" ] || status="ok (warnings)"
  # One write per file, so that the two parallel jobs do not interleave their lines.
  {
    printf '%-14s %4d.%01ds  %s\n' "$status" $((ms / 1000)) $((ms % 1000 / 100)) "${src#"$ROOT"/}"
    sed 's/^/    /' "$log"
  } >"$log.report"
  cat "$log.report"
  return "$rc"
}
export -f compile_one

cd "$ROOT"
if printf '%s\0' "${FILES[@]}" | xargs -0 -n 1 -P "$JOBS" bash -c 'compile_one "$1"' _; then
  echo "all ${#FILES[@]} CUDA files compile (sm_90, sm_80)"
else
  echo "CUDA compile check FAILED" >&2
  exit 1
fi
