import torch, time, statistics
torch.set_num_threads(2)
T, D, F = 609, 768, 2048
lp = torch.ops.mkldnn._linear_pointwise
x = torch.randn(1, T, D)
for (n, parts) in ((2*F, 2), (2*F, 4), (3*D, 3)):
    w = torch.randn(n, D) * 0.02
    pw = torch.ops.mkldnn._reorder_linear_weight(w, 512)
    ps = [torch.ops.mkldnn._reorder_linear_weight(h.contiguous(), 512) for h in w.chunk(parts)]
    fs = {"fused": lambda: lp(x, pw, None, "none", [], ""), "split": lambda: [lp(x, h, None, "none", [], "") for h in ps]}
    times = {m: [] for m in fs}
    for r in range(60):
        for m, f in (fs.items() if r % 2 else reversed(list(fs.items()))):
            t=time.perf_counter(); f(); times[m].append(time.perf_counter()-t)
    print(n, parts, {m: round(statistics.median(times[m][4:])*1e3,2) for m in fs}, "split speedup", round(statistics.median([a/b for a,b in zip(times["fused"][4:], times["split"][4:])]),3))
