#!/bin/bash
# `make sanitize`: the C++ CPU kernels built with AddressSanitizer and UndefinedBehaviorSanitizer.
# 1. The Python extension is rebuilt with the sanitizers into build/sanitize and the op tests run
#    against it (DYRATE_EXTENSION_PATH); python itself is not instrumented, so the ASan runtime is
#    preloaded and leak checking (CPython's own allocations) is off.
# 2. The CMake library and the C++ example, built with the sanitizers, run each op once.
# Any sanitizer report aborts its process, which fails the run. SANITIZE_TESTS picks the tests
# (default: every op test); `make test` runs the property tests only.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=build/sanitize
TESTS=${SANITIZE_TESTS:-tests/test_op_properties.py tests/test_op_properties_dense.py \
tests/test_attention_scores.py tests/test_select_keep.py tests/test_compact_kv.py \
tests/test_decode_attention.py tests/test_decode_linear.py tests/test_decoder_elementwise.py}
CXX=${CXX:-g++}
ASAN_RUNTIME=$($CXX -print-file-name=libasan.so)
[ -f "$ASAN_RUNTIME" ] || { echo "sanitize: $CXX has no libasan.so (install libasan for $CXX)"; exit 1; }
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
mkdir -p "$OUT"

echo "== the extension with -fsanitize=address,undefined ($OUT)"
LD_PRELOAD=$ASAN_RUNTIME $PY scripts/build_sanitized.py "$OUT"
echo "== the op tests against it"
# The Triton interpreter (CPU tests of the GPU kernels) is not under test here: skip its cases.
LD_PRELOAD=$ASAN_RUNTIME DYRATE_EXTENSION_PATH=$OUT/_C.so \
  $PY -m pytest -q -p no:cacheprovider -k "not triton" $TESTS

echo "== the C++ example, library and program with the sanitizers"
cmake -S . -B build/cmake-sanitize -DDYRATE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')" >/dev/null
cmake --build build/cmake-sanitize -j2
build/cmake-sanitize/dyrate_run_ops
echo "sanitize: clean"
