import torch, time, statistics
torch.ops.load_library("/tmp/s9/build_ca/ca_s9.so")
torch.set_num_threads(2)
B,H,T,D = 1,12,609,64
q = torch.randn(B,H,T,D); k = torch.randn(B,H,T,D); v = torch.randn(B,H,T,D)
modes = {"full": 64, "no_softmax": 1064, "no_qk": 2064, "softmax_only": 3064, "qk_only": 4064}
times = {m: [] for m in modes}
for r in range(30):
    for m, b in modes.items():
        torch.ops.s9.set_block(b)
        t=time.perf_counter(); torch.ops.s9.causal_attention(q,k,v,None); times[m].append(time.perf_counter()-t)
for m in modes: print(m, f"{statistics.median(times[m][3:])*1e3:.2f} ms")
