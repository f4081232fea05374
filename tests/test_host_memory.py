"""``engine.host_memory``: with the thresholds raised, a freed block is reused without page
faults; without, glibc hands it back and the next use faults every page in again."""
import subprocess
import sys

import pytest

from dyrate_engine.engine.host_memory import keep_freed_memory

# Faults taken by the sixth 40 MiB allocation after five were filled and freed: the steady state
# (the first two may grow the heap, depending on where the interpreter's small blocks landed).
PROBE = """
import resource, sys, torch
from dyrate_engine.engine.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
for i in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(10 << 20).fill_(1.0)  # 40 MiB
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
print(applied, faults)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_block_is_reused_without_page_faults():
    applied, kept = _faults("keep")
    if applied != "True":
        pytest.skip("the C library is not glibc")
    _, default = _faults("default")
    assert kept < 200  # the pages stayed mapped
    assert default > 5000  # 10,240 pages of 4 KiB, handed back to the OS and faulted in again


def test_limits_out_of_range_are_refused():
    for bad in (0, -1, 1 << 31):
        with pytest.raises(ValueError, match="limit_bytes"):
            keep_freed_memory(bad)
