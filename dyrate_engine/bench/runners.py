"""One timed generate call of transformers or of the engine, with per-step times and peak memory.

Both make exactly ``n`` new tokens per sequence (EOS disabled; checked). A decode step is timed
inside the loop: for the engine its own ``stats.step_ms`` (the step's embedding, layers, pruning,
logits, sampling and the read of the sampled tokens, which on CUDA waits for the device); for
transformers the interval between successive calls of a no-op stopping criterion, which
``generate`` calls once after each new token. ``prefill_ms`` is the call's start to its first
token (vision tower, prefill, first sample) for both.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .presets import left_pad
from .timing import synchronize


@dataclass
class Run:
    prefill_ms: float
    step_ms: list[float]  # n - 1 decode steps
    wall_ms: float  # the whole call
    peak_mem_bytes: int
    results: list = field(default_factory=list)  # the engine's GenerationResults
    bandwidth_gbs: float | None = None  # copy bandwidth measured at the start of the call's round


class StepClock(StoppingCriteria):
    """Never stops; notes the time each time generate() has made a token."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _rss_peak_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so that the resident set at a call's start
    is what is live, not what earlier calls left cached in malloc's arenas."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def peak_memory(device):
    """Yields a dict whose ``peak`` (bytes) is set on exit: on CUDA the allocator's peak during
    the block; on CPU the process's peak resident set during it (Linux: VmHWM, reset first
    through /proc/self/clear_refs after trimming the heap; elsewhere ru_maxrss, the process's
    lifetime peak). Weights are included in both."""
    out = {"peak": 0}
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak"] = torch.cuda.max_memory_allocated(device)
        return
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    yield out
    kib = _rss_peak_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak"] = kib * 1024


def run_hf(hf, ids, vision: dict, n) -> Run:
    """transformers' greedy ``generate`` on the left-padded batch; ``vision``: the processor's
    vision tensors by name (``make_prompts``)."""
    device = hf.device
    input_ids, mask = (t.to(device) for t in left_pad(ids))
    vision = {name: t.to(device, hf.dtype) if t.is_floating_point() else t.to(device)
              for name, t in vision.items()}
    if "image_grid_thw" in vision:  # Qwen-VL: which tokens are visual, padded like the ids
        vision["mm_token_type_ids"] = (input_ids == hf.config.image_token_id).long()
    clock = StepClock()
    with peak_memory(device) as mem, torch.inference_mode():
        synchronize(device)
        start = time.perf_counter()
        out = hf.generate(input_ids=input_ids, attention_mask=mask, **vision,
                          max_new_tokens=n, do_sample=False,
                          stopping_criteria=StoppingCriteriaList([clock]))
        synchronize(device)
        wall = time.perf_counter() - start
    # No EOS, so no row is finished early and padded: the width is every row's count.
    made = out.shape[1] - input_ids.shape[1]
    assert made == n and len(clock.times) == n, f"transformers made {made} of {n} tokens"
    steps = [(b - a) * 1e3 for a, b in zip(clock.times, clock.times[1:])]
    return Run((clock.times[0] - start) * 1e3, steps, wall * 1e3, mem["peak"])


def run_engine(engine, ids, vision: dict, n, policy=None) -> Run:
    device = engine.device
    # Pixels start on the device, as for transformers; grids and sizes stay where they are.
    vision = {name: t.to(device) if t.is_floating_point() else t for name, t in vision.items()}
    with peak_memory(device) as mem:
        synchronize(device)
        start = time.perf_counter()
        results = engine.generate_ids(ids, policy=policy, max_new_tokens=n, ignore_eos=True,
                                      **vision)
        synchronize(device)
        wall = time.perf_counter() - start
    for r in results:
        assert len(r.token_ids) == n and r.finish_reason == "length", \
            f"engine made {len(r.token_ids)} of {n} tokens ({r.finish_reason})"
    s = results[0].stats
    return Run(s.prefill_ms, list(s.step_ms), wall * 1e3, mem["peak"], results)
