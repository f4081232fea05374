import torch, time, statistics
torch.ops.load_library("/tmp/s9/build_ca/ca_s9.so")
import dyrate_engine.ops
torch.set_num_threads(2)
for (B,H,T,D) in ((1,12,609,64), (1,32,609,128)):
    q = torch.randn(B,H,T,D); k = torch.randn(B,H,T,D); v = torch.randn(B,H,T,D)
    torch.ops.s9.set_block(64)
    a = torch.ops.s9.causal_attention(q,k,v,None); b = torch.ops.dyrate.causal_attention.default(q,k,v,None)
    print("maxdiff", (a-b).abs().max().item())
    fs = {"old": lambda: torch.ops.s9.causal_attention(q,k,v,None), "new": lambda: torch.ops.dyrate.causal_attention.default(q,k,v,None)}
    times = {m: [] for m in fs}
    for r in range(30):
        for m, f in fs.items():
            t=time.perf_counter(); f(); times[m].append(time.perf_counter()-t)
    print((B,H,T,D), {m: round(statistics.median(times[m][3:])*1e3,2) for m in fs}, "speedup", round(statistics.median([x/y for x,y in zip(times["old"][3:], times["new"][3:])]),3))
