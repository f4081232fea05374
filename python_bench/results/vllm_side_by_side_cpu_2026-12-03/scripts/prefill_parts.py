import torch, time, statistics
import torch.nn.functional as F
torch.set_num_threads(2)
def bench(fs, n=15):
    ts={k:[] for k in fs}
    for f in fs.values(): f(); f()
    for _ in range(n):
        for k,f in fs.items():
            t=time.perf_counter(); f(); ts[k].append(time.perf_counter()-t)
    return {k: round(statistics.median(v)*1e3,3) for k,v in ts.items()}
T,H,hd=609,12,64
q=torch.randn(1,H,T,hd); k=torch.randn(1,H,T,hd); v=torch.randn(1,H,T,hd)
mask=torch.full((T,T),float('-inf')).triu(1)
def naive():
    s=torch.baddbmm(mask.expand(H,T,T), q[0], k[0].transpose(1,2), alpha=hd**-0.5)
    return torch.bmm(torch.softmax(s,-1), v[0])
r=bench({'sdpa':lambda: F.scaled_dot_product_attention(q,k,v,is_causal=True),'naive':naive})
print("attention per layer", r, (naive()-F.scaled_dot_product_attention(q,k,v,is_causal=True)[0]).abs().max().item())
x=torch.randn(1,T,768); w=torch.randn(768)
def rms(x):
    x32=x.float(); x32=x32*torch.rsqrt(x32.pow(2).mean(-1,keepdim=True)+1e-5); return w*x32.to(x.dtype)
print("rms", bench({'ours':lambda: rms(x),'F.rms_norm':lambda: F.rms_norm(x,(768,),w,1e-5)}), (rms(x)-F.rms_norm(x,(768,),w,1e-5)).abs().max().item())
g=torch.randn(1,T,4096)
print("silu_mul", bench({'split':lambda: F.silu(g[...,:2048])*g[...,2048:]}))
h=torch.randn(1,T,768); a=torch.randn(1,T,768)
print("residual add", bench({'add':lambda: h+a}))
