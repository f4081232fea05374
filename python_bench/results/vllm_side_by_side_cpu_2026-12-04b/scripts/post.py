import torch, time, statistics
import dyrate_engine.ops
torch.set_num_threads(2)
T, D, F = 609, 768, 2048
lp = torch.ops.mkldnn._linear_pointwise
gu = torch.randn(2*F, D) * 0.05; dn = torch.randn(D, F) * 0.05
x = torch.randn(1, T, D)
h = torch.randn(1, T, D)
pgu = torch.ops.mkldnn._reorder_linear_weight(gu, 512)
g, u = gu.chunk(2)
pg = torch.ops.mkldnn._reorder_linear_weight(g.contiguous(), 512); pu = torch.ops.mkldnn._reorder_linear_weight(u.contiguous(), 512)
pdn = torch.ops.mkldnn._reorder_linear_weight(dn, 512)
silu = torch.ops.dyrate.silu_mul.default
for attr in ("swish", "silu"):
    try:
        y = lp(x, pg, None, attr, [], ""); print(attr, "ok", (y - torch.nn.functional.silu(x @ g.T)).abs().max().item())
    except Exception as e: print(attr, "fail", str(e)[:100])
def fused(x, h):
    a = lp(x, pg, None, "swish", [], "")
    m = torch.ops.mkldnn._linear_pointwise.binary(x, a, pu, None, "mul")
    return torch.ops.mkldnn._linear_pointwise.binary(m, h, pdn, None, "add")
def base(x, h):
    return h + lp(silu(lp(x, pgu, None, "none", [], "")), pdn, None, "none", [], "")
ref = (h.double() + (torch.nn.functional.silu(x.double() @ g.double().T) * (x.double() @ u.double().T)) @ dn.double().T)
print("err fused", (fused(x,h).double()-ref).abs().max().item(), "base", (base(x,h).double()-ref).abs().max().item())
v = {"base": base, "fused": fused}
times = {k: [] for k in v}
for r in range(30):
    for k, f in v.items():
        t = time.perf_counter(); f(x, h); times[k].append(time.perf_counter() - t)
for k in v: print(k, statistics.median(times[k][3:])*1e3, "ratio", statistics.median([a/b for a,b in zip(times["base"][3:], times[k][3:])]))
def v1(x, h):
    return torch.ops.mkldnn._linear_pointwise.binary(silu(lp(x, pgu, None, "none", [], "")), h, pdn, None, "add")
def v2(x, h):
    a = lp(x, pg, None, "swish", [], ""); a.mul_(lp(x, pu, None, "none", [], ""))
    return h + lp(a, pdn, None, "none", [], "")
v = {"base": base, "v1_add": v1, "v2_swish": v2, "fused": fused}
times = {k: [] for k in v}
for r in range(30):
    for k, f in v.items():
        t = time.perf_counter(); f(x, h); times[k].append(time.perf_counter() - t)
for k in v: print(k, statistics.median(times[k][3:])*1e3, "ratio", statistics.median([a/b for a,b in zip(times["base"][3:], times[k][3:])]))
