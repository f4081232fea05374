import torch, time, statistics, dyrate_engine.ops as ops
torch.set_num_threads(2)
B,H,D,cap,L=16,12,64,1700,680
k=torch.randn(B,H,cap,D);v=torch.randn(B,H,cap,D);q=torch.randn(B,H,D)
lengths=torch.full((B,),L)
ts=[]
for r in range(40):
    t=time.perf_counter(); ops.decode_attention(q,k,v,lengths); ts.append(time.perf_counter()-t)
m=statistics.median(ts[5:]); by=B*H*L*D*4*2
print('decode_attention ms',m*1e3,'GB/s',by/m/1e9)
x=torch.randn(by//4); y=torch.empty_like(x)
ts=[]
for r in range(40):
    t=time.perf_counter(); y.copy_(x); ts.append(time.perf_counter()-t)
m=statistics.median(ts[5:]); print('copy GB/s (r+w)',2*by/m/1e9)
ts=[]
for r in range(40):
    t=time.perf_counter(); x.sum(); ts.append(time.perf_counter()-t)
m=statistics.median(ts[5:]); print('sum read GB/s',by/m/1e9)
