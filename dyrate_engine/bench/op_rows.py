"""One row of ``dyrate bench ops``: an op's median time against its reference's, on the same
inputs in the same process, with the bandwidth it achieved."""
from __future__ import annotations

from dataclasses import dataclass

from .timing import median_ms


@dataclass
class Row:
    op: str
    device: str
    dtype: str
    batch: int
    shape: str
    ms: float
    spread_ms: float
    reference_ms: float
    speedup: float
    gbs: float
    of_copy_bw: float
    gflops: float = 0.0  # compute-bound ops only


def measure_row(name, t, fused, reference, nbytes, args, setup=None, batch=None):
    kw = dict(device=t.device, warmup=args.warmup, repeats=args.repeats, setup=setup)
    ms, spread = median_ms(fused, **kw)
    ref_ms, _ = median_ms(reference, **kw)
    gbs = nbytes / (ms * 1e-3) / 1e9
    if batch is None:
        batch = t.shape[2] if name == "compact_kv_" else t.shape[0]
    return Row(name, t.device.type, str(t.dtype).removeprefix("torch."), batch,
               "x".join(map(str, t.shape)),
               ms, spread, ref_ms, ref_ms / ms, gbs, 0.0)
