import torch, time, statistics
torch.ops.load_library("/tmp/s9/build_ca/ca_s9.so")
import dyrate_engine.ops
torch.set_num_threads(2)
B,H,T,D = 1,12,609,64
q = torch.randn(B,H,T,D); k = torch.randn(B,H,T,D); v = torch.randn(B,H,T,D)
ref = torch.ops.dyrate.causal_attention.default(q,k,v,None)
blocks = [32, 48, 64, 96, 128, 160]
times = {b: [] for b in blocks}
for b in blocks:
    torch.ops.s9.set_block(b)
    assert torch.allclose(torch.ops.s9.causal_attention(q,k,v,None), ref, atol=1e-5)
for r in range(30):
    for b in blocks:
        torch.ops.s9.set_block(b)
        t=time.perf_counter(); torch.ops.s9.causal_attention(q,k,v,None); times[b].append(time.perf_counter()-t)
for b in blocks:
    print(b, f"{statistics.median(times[b][3:])*1e3:.2f} ms", f"ratio vs 64 {statistics.median([x/y for x,y in zip(times[64][3:], times[b][3:])]):.3f}")
