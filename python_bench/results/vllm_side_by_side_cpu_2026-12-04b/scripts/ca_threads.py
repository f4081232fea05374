import torch, time, statistics
torch.ops.load_library("/tmp/s9/build_ca/ca_s9.so")
B,H,T,D = 1,12,609,64
q = torch.randn(B,H,T,D); k = torch.randn(B,H,T,D); v = torch.randn(B,H,T,D)
fl = 12*sum(min(64,609-t0)*(t0+min(64,609-t0)) for t0 in range(0,609,64))*64*2
for th in (1, 2):
    torch.set_num_threads(th)
    for name, mode in (("full", 64), ("qk_only", 4064), ("softmax_only", 3064), ("no_softmax", 1064)):
        torch.ops.s9.set_block(mode)
        ts = []
        for _ in range(30):
            t = time.perf_counter(); torch.ops.s9.causal_attention(q, k, v, None); ts.append(time.perf_counter() - t)
        m = statistics.median(ts[3:])
        print(th, name, f"{m*1e3:.2f} ms", f"{fl/m/1e9:.0f} GFLOP/s per GEMM-equivalent")
