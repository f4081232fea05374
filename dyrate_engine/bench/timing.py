"""Timing helpers shared by the benchmarks: medians after warm-up, spreads, and the bandwidth
ceilings (copy: bytes read + written per second; read: bytes read per second)."""
from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


_FLUSH_BUFFERS: dict[str, torch.Tensor] = {}


def flush_caches(device) -> None:
    """Evict the inputs from the caches (L3 on CPU, L2 on GPU) by reading a larger buffer, so a
    kernel is timed reading from memory as it would in a decode step, not from a warm cache.
    Reading, not writing: dirty lines would still drain during the timed call."""
    key = str(torch.device(device))
    if key not in _FLUSH_BUFFERS:
        _FLUSH_BUFFERS[key] = torch.ones(64 << 20, dtype=torch.float32, device=device)
    _FLUSH_BUFFERS[key].sum()


def median_ms(fn, *, device="cpu", warmup=3, repeats=10, setup=None, cold=True) -> tuple[float, float]:
    """Median and spread (max - min) in ms of ``fn()`` over ``repeats`` runs after ``warmup``.

    ``setup()`` runs untimed before every call (e.g. to restore the input of an in-place op);
    with ``cold`` the caches are flushed before every call too.
    """
    times = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        if cold:
            flush_caches(device)
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
    ms, _ = median_ms(lambda: dst.copy_(src), device=device, warmup=2, repeats=repeats, cold=False)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def read_bandwidth_gbs(device="cpu", nbytes=1 << 30, repeats=10) -> float:
    """Bytes read per second by ``.sum()`` of a large fp32 tensor, in GB/s."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    ms, _ = median_ms(lambda: src.sum(), device=device, warmup=2, repeats=repeats, cold=False)
    return nbytes / (ms * 1e-3) / 1e9


def spread(values) -> dict:
    """Median, min and max of repeated measurements (and the values themselves)."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def matmul_gflops(device="cpu", dtype=torch.float32, n=1024, repeats=10) -> float:
    """FLOPs per second of an ``n``-square matmul (PyTorch's BLAS), the compute ceiling that a
    GEMM-bound kernel is set against, in GFLOP/s."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms, _ = median_ms(lambda: a @ b, device=device, warmup=2, repeats=repeats, cold=False)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9
