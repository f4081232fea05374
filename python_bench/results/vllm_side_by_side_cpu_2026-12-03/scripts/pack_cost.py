"""Time and memory of packing the cpu-vllm decoder's matrices for MKL at several row counts."""
import time

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for

torch.set_num_threads(2)
p = PRESETS["cpu-vllm"]
d = engine_for(p, build_model(p)).decoder
for rows in (1, 8, 16, 8):
    t = time.perf_counter()
    d.packed.pack(d.linear_weights(), rows)
    print(rows, f"{(time.perf_counter() - t) * 1e3:.0f} ms", d.packed.nbytes >> 20, "MiB")
