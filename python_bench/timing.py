"""Timing helpers shared by the benchmarks: medians after warm-up, and the copy-bandwidth ceiling."""
from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, *, device="cpu", warmup=3, repeats=10, setup=None) -> tuple[float, float]:
    """Median and spread (max - min) in ms of ``fn()`` over ``repeats`` runs after ``warmup``.

    ``setup()`` runs untimed before every call (e.g. to restore the input of an in-place op).
    """
    times = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(times) - min(times)


def copy_bandwidth_gbs(device="cpu", nbytes=1 << 30, repeats=10) -> float:
    """Bytes read plus bytes written per second by a plain large tensor copy, in GB/s."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms, _ = median_ms(lambda: dst.copy_(src), device=device, warmup=2, repeats=repeats)
    return 2 * nbytes / (ms * 1e-3) / 1e9
