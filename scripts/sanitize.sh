#!/bin/bash
# `make sanitize`, first half: the Python extension rebuilt with AddressSanitizer and
# UndefinedBehaviorSanitizer into build/sanitize, and the op tests run against it
# (DYRATE_EXTENSION_PATH). Python itself is not instrumented, so the ASan runtime is preloaded and
# leak checking (CPython's own allocations) is off. Any report aborts the tests, which fails the
# run. SANITIZE_TESTS picks the tests (default: every op test). The second half, the CMake
# library and the C++ example under the same sanitizers, is `make cmake-check`, which `make test`
# runs every time.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=build/sanitize
TESTS=${SANITIZE_TESTS:-tests/test_op_properties.py tests/test_op_properties_dense.py \
tests/test_attention_scores.py tests/test_select_keep.py tests/test_compact_kv.py \
tests/test_decode_attention.py tests/test_decode_linear.py tests/test_decoder_elementwise.py}
CXX=${CXX:-g++}
ASAN_RUNTIME=$($CXX -print-file-name=libasan.so)
[ -f "$ASAN_RUNTIME" ] || { echo "sanitize: $CXX has no libasan.so (install libasan for $CXX)"; exit 1; }
# python does not link libstdc++: preloaded with the runtime, ASan finds the real __cxa_throw,
# so the kernels' argument errors propagate as exceptions.
ASAN_RUNTIME="$ASAN_RUNTIME $($CXX -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
mkdir -p "$OUT"

echo "== the extension with -fsanitize=address,undefined ($OUT)"
LD_PRELOAD="$ASAN_RUNTIME" $PY scripts/build_sanitized.py "$OUT"
echo "== the op tests against it"
# The Triton interpreter (CPU tests of the GPU kernels) is not under test here: skip its cases.
LD_PRELOAD="$ASAN_RUNTIME" DYRATE_EXTENSION_PATH=$OUT/_C.so \
  $PY -m pytest -q -p no:cacheprovider -k "not triton" $TESTS

echo "sanitize: the op tests ran clean"
