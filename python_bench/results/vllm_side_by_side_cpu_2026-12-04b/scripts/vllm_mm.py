import os, time, statistics, torch
from vllm import _custom_ops as ops
torch.set_num_threads(2)
T = 609
lp = torch.ops.mkldnn._linear_pointwise
print("supports onednn", ops._supports_onednn)
for (n, k) in ((2304, 768), (768, 768), (4096, 768), (768, 2048)):
    w = torch.randn(n, k) * 0.02
    x = torch.randn(T, k)
    h = ops.create_onednn_mm(w.t(), 32)
    pw = torch.ops.mkldnn._reorder_linear_weight(w, 512)
    a = ops.onednn_mm(h, x, None); b = lp(x, pw, None, "none", [], "")
    fs = {"vllm": lambda: ops.onednn_mm(h, x, None), "torch": lambda: lp(x, pw, None, "none", [], "")}
    times = {m: [] for m in fs}
    for r in range(40):
        for m, f in (fs.items() if r % 2 else reversed(list(fs.items()))):
            t = time.perf_counter(); f(); times[m].append(time.perf_counter() - t)
    fl = 2 * T * n * k
    print((n, k), "maxdiff", (a-b).abs().max().item(), {m: round(fl / statistics.median(times[m][4:]) / 1e9) for m in fs}, "vllm/torch speed", round(statistics.median([y / x for x, y in zip(times["vllm"][4:], times["torch"][4:])]), 3))
