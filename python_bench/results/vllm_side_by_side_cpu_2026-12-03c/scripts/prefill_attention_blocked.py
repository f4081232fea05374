import torch, time, torch.nn.functional as F
torch.set_num_threads(2)
T,H,D=609,12,64
q=torch.randn(1,H,T,D);k=torch.randn(1,H,T,D);v=torch.randn(1,H,T,D)
def sdpa(): return F.scaled_dot_product_attention(q,k,v,is_causal=True)
def blocked(nb=4):
    out=torch.empty_like(q)
    scale=D**-0.5
    bounds=[round(T*i/nb) for i in range(nb+1)]
    for a,b in zip(bounds[:-1],bounds[1:]):
        s=torch.matmul(q[:,:,a:b]*scale, k[:,:,:b].transpose(-1,-2))
        # causal within the diagonal block
        m=torch.ones(b-a,b,dtype=torch.bool).tril(a)
        s.masked_fill_(~m,float('-inf'))
        torch.softmax(s,-1,out=s)
        torch.matmul(s,v[:,:,:b],out=out[:,:,a:b])
    return out
ref=sdpa()
for nb in (1,2,4,8):
    print(nb,(blocked(nb)-ref).abs().max().item())
import statistics
fns={'sdpa':sdpa,'b2':lambda:blocked(2),'b4':lambda:blocked(4),'b8':lambda:blocked(8)}
ts={n:[] for n in fns}
for r in range(30):
    for n,f in fns.items():
        t=time.perf_counter(); f(); ts[n].append(time.perf_counter()-t)
for n in fns: print(n, statistics.median(ts[n])*1e3*12,'ms x12 layers')
