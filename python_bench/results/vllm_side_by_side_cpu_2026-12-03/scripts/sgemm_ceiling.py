import torch, time, statistics
torch.set_num_threads(2)
def bench(f, n=5):
    f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return statistics.median(ts)
for M in (609, 1218, 4872):
    tot=0; fl=0
    for N,K in [(2304,768),(768,768),(4096,768),(768,2048)]:
        x=torch.randn(M,K); w=torch.randn(N,K)
        t=bench(lambda: torch.nn.functional.linear(x,w)); tot+=t; fl+=2*M*N*K
    print(M, f"{fl/tot/1e9:.0f} GF/s")
a=torch.randn(2048,2048); b=torch.randn(2048,2048)
t=bench(lambda: a@b); print("2048^3", f"{2*2048**3/t/1e9:.0f} GF/s")
a=a.bfloat16(); b=b.bfloat16()
t=bench(lambda: a@b); print("bf16 2048^3", f"{2*2048**3/t/1e9:.0f} GF/s")
