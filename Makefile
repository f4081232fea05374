# The contract with a newcomer: `make test` sets everything up on a fresh machine and runs the tests;
# `make demo` (see README) runs the main job. Both are self-contained.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch that lies on the development machines' disk; any other version downloads GBs.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test pytest cuda-check-beside demo build venv cuda-check cmake-check wheel-check bench-ops soak sanitize properties clean

venv: $(VENV)/.ready
$(VENV)/.ready: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q setuptools wheel ninja pybind11
	touch $@

# Builds the C++ extension (and the CUDA kernels when torch has CUDA and nvcc is found) and
# installs the package with its test dependencies.
build: venv
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"

# pytest keeps about one core of two busy, so the CUDA compile check runs beside it, one file at
# a time (each one's output printed whole when it ends).
test: build
	$(MAKE) -j2 --output-sync=target pytest cuda-check-beside
	$(MAKE) wheel-check
	$(MAKE) cmake-check

pytest:
	$(PY) -m pytest -q

cuda-check-beside:
	@if command -v nvcc >/dev/null 2>&1; then JOBS=1 PYTHON=$(PY) bash scripts/cuda_check.sh; \
	else echo "nvcc not found: CUDA compile check skipped"; fi

# Captions the bundled example image with the demo model, dense and with its DyRate predictor.
demo: build
	$(PY) -m dyrate_engine.demo

# The same ops as a shared library against libtorch, and a C++ program that runs each op once;
# both built with AddressSanitizer and UndefinedBehaviorSanitizer, so any report fails the check.
cmake-check: venv
	cmake -S . -B build/cmake -DDYRATE_SANITIZE=ON -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" >/dev/null
	cmake --build build/cmake -j2
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/cmake/dyrate_run_ops

# An sdist, a wheel built from it alone, installed in a fresh venv: the demo runs outside the checkout.
wheel-check: build
	PYTHON=$(PY) bash scripts/wheel_check.sh

# Every csrc/**/*.cu compiles for sm_90 and sm_80 against the torch headers (no GPU needed).
cuda-check: venv
	PYTHON=$(PY) bash scripts/cuda_check.sh

# The soaks (minutes; opt-in): 1,000 generate calls and 1,000 server requests of mixed policies,
# batches, sampling, cancels and bad input, each checked, with resident memory watched.
soak: build
	DYRATE_SOAK=1 $(PY) -m pytest -q -s tests/test_soak_generate.py tests/test_soak.py

# The C++ CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer: every op test
# against a sanitized build of the extension (scripts/sanitize.sh; minutes), and the C++ example.
sanitize: build
	PYTHON=$(PY) bash scripts/sanitize.sh
	$(MAKE) cmake-check

# The op property tests with many random examples each instead of the bounded, seeded set.
properties: build
	DYRATE_PROPERTY_EXAMPLES=2000 $(PY) -m pytest -q tests/test_op_properties.py tests/test_op_properties_dense.py

bench-ops: build
	$(PY) -m dyrate_engine.cli bench ops --json out/ops_$$(date +%F).json

clean:
	rm -rf build dist out *.egg-info dyrate_engine/*.so
