"""The C++ kernels' tests again with the SIMD paths capped (``DYRATE_CPU_ISA``), in a
subprocess: a machine with AVX-512 otherwise never runs the AVX2 paths, and none runs the scalar
ones that CPUs without AVX2 get."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dyrate_engine import ops

KERNEL_TESTS = ["test_decode_linear.py", "test_decoder_elementwise.py", "test_decode_attention.py",
                "test_attention_scores.py", "test_select_keep.py",
                "test_causal_attention.py"]  # compact_kv has no SIMD path


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_kernel_tests_pass_on_a_capped_path(isa):
    if not ops.EXTENSION_LOADED:
        pytest.skip("extension not built")
    if os.environ.get("DYRATE_CPU_ISA"):
        pytest.skip("already running under a capped path")
    here = Path(__file__).parent
    env = {**os.environ, "DYRATE_CPU_ISA": isa}
    probe = subprocess.run([sys.executable, "-c", "from dyrate_engine import ops; "
                            "print(ops.cpu_isa())"], env=env, capture_output=True, text=True)
    took = probe.stdout.strip()
    if isa == "avx2" and took == "scalar":
        pytest.skip("this CPU has no AVX2")
    assert took == isa, probe.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          *KERNEL_TESTS], cwd=here, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
