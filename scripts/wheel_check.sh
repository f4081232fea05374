#!/usr/bin/env bash
# The package as a user installs it: a source distribution built from this checkout, a wheel built
# from that sdist alone (so the sdist must hold every source: csrc/*.h, csrc/cuda/*, the demo
# files), the wheel installed into a fresh venv, and the demo and a benchmark run from a
# directory outside the checkout. The fresh venv sees the project venv's dependencies through a
# .pth file (no download); the check fails if dyrate_engine comes from anywhere but the wheel.
# Usage: scripts/wheel_check.sh   (PYTHON: the project venv's python, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, not resolved: a venv's python is a link
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== sdist"
"$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 \
    || { cat "$WORK/sdist.log"; exit 1; }
tar -xzf "$WORK"/dist/*.tar.gz -C "$WORK"
SRC=$(echo "$WORK"/dyrate_engine-*/)
for needed in csrc/op_checks.h csrc/cpu/simd.h csrc/cuda/common.cuh csrc/cuda/compact_kv.cu \
              dyrate_engine/demo/model/model.safetensors dyrate_engine/demo/predictor/predictor.json \
              dyrate_engine/demo/example.png; do
    [[ -f "$SRC/$needed" ]] || { echo "sdist lacks $needed"; exit 1; }
done
if ls "$SRC" | grep -q python_bench; then echo "sdist holds python_bench"; exit 1; fi

echo "== wheel from the sdist (compiles the op library)"
(cd "$WORK" && MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel -q --no-build-isolation --no-deps \
    -w "$WORK/wheel" "$SRC")

echo "== fresh venv, outside the checkout"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    >"$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project_deps.pth"
"$VPY" -m pip install -q --no-deps --no-index "$WORK"/wheel/*.whl
cd "$WORK"
"$VPY" - "$WORK/venv" <<'PYEOF'
import sys
from pathlib import Path

import dyrate_engine
from dyrate_engine import ops
from dyrate_engine.bundled import DEMO_MODEL, DEMO_PREDICTOR, EXAMPLE_IMAGE

here = Path(dyrate_engine.__file__).resolve()
assert Path(sys.argv[1]).resolve() in here.parents, f"dyrate_engine imported from {here}"
assert ops.EXTENSION_LOADED, "the wheel's compiled op library did not load"
for path in (DEMO_MODEL / "model.safetensors", DEMO_PREDICTOR / "predictor.json", EXAMPLE_IMAGE):
    assert path.is_file(), f"the wheel lacks {path}"
print(f"dyrate_engine {dyrate_engine.__version__} from {here.parent}, extension loaded")
PYEOF
"$VPY" -m dyrate_engine.demo | tee "$WORK/demo.txt"
grep -q "^\[dense\] there " "$WORK/demo.txt" && grep -q "^\[dyrate(K=" "$WORK/demo.txt"
"$WORK/venv/bin/dyrate" bench ops --device cpu --shape tiny --batch 1 --dtype float32 \
    --warmup 1 --repeats 2 >/dev/null
echo "wheel check passed"
