"""python_bench/vllm_cpu/paired.py's quiet-machine wait: it finds a side's child processes and
waits while they burn CPU, and no longer."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PAIRED = Path(__file__).resolve().parents[1] / "python_bench" / "vllm_cpu" / "paired.py"
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("paired", PAIRED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kill_tree(paired, proc: subprocess.Popen) -> None:
    """``proc`` and its descendants, without depending on pkill being installed."""
    for pid in paired.process_tree(proc.pid) - {proc.pid}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def _spawn(code: str) -> subprocess.Popen:
    """A python process running ``code``; returns once it printed its first line."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    proc.first_line = proc.stdout.readline().strip()
    return proc


SPIN = "import time; print('go', flush=True)\nend = time.time() + {seconds}\nwhile time.time() < end: pass\ntime.sleep(30)"


def test_process_tree_holds_the_children(paired):
    parent = _spawn("import subprocess, sys, time\n"
                    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
                    "print(c.pid, flush=True); time.sleep(30)")
    try:
        child = int(parent.first_line)
        assert {parent.pid, child} <= paired.process_tree(parent.pid)
        assert os.getpid() not in paired.process_tree(parent.pid)
    finally:
        _kill_tree(paired, parent)


def test_wait_quiet_waits_out_a_busy_child_of_a_side(paired):
    # The busy process is the side's child, as vLLM's engine core is run_vllm.py's.
    parent = _spawn("import subprocess, sys, time\n"
                    f"c = subprocess.Popen([sys.executable, '-c', {SPIN.format(seconds=1.0)!r}],"
                    " stdout=subprocess.PIPE, text=True)\n"
                    "c.stdout.readline(); print('spinning', flush=True); time.sleep(30)")
    try:
        start = time.perf_counter()
        waited = paired.wait_quiet([parent.pid], timeout=10)
        assert 0.6 <= waited < 5, waited
        assert time.perf_counter() - start >= 0.6
    finally:
        _kill_tree(paired, parent)


def test_wait_quiet_returns_at_once_when_idle_and_gives_up_at_the_timeout(paired):
    idle = _spawn("import time; print('ready', flush=True); time.sleep(30)")
    busy = _spawn(SPIN.format(seconds=20))
    try:
        assert paired.wait_quiet([idle.pid], timeout=10) < 0.6
        waited = paired.wait_quiet([idle.pid, busy.pid], timeout=0.5)
        assert 0.5 <= waited < 2, waited
    finally:
        for proc in (idle, busy):
            proc.kill()
            proc.wait()
