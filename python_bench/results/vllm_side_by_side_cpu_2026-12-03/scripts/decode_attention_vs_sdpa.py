import torch, time, statistics
import torch.nn.functional as F
from dyrate_engine import ops
from dyrate_engine.ops.decode_attention import decode_attention_reference as ref
torch.set_num_threads(2)
def bench(f, n=30):
    for _ in range(3): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return statistics.median(ts)
torch.manual_seed(0)
for dt in (torch.float32, torch.bfloat16, torch.float16):
  for (B,H,Hkv,D) in [(3,4,4,64),(2,8,2,128),(2,7,1,80),(1,6,3,24)]:
    cap=50
    k=torch.randn(B,Hkv,cap,D,dtype=dt); v=torch.randn(B,Hkv,cap,D,dtype=dt); q=torch.randn(B,H,D,dtype=dt)
    lens=torch.randint(0,cap+1,(B,)); lens[0]=cap
    for w in (None,5):
      a=ops.decode_attention(q,k,v,lens,window=w); r=ref(q,k,v,lens,window=w)
      print(dt,B,H,Hkv,D,w, f"{(a.float()-r.float()).abs().max():.2e}")
B,H,cap,hd,n=16,12,680,64,610
kv=torch.randn(12,2,B,H,cap,hd)
q=torch.randn(B,H,1,hd)
mask=torch.ones(B,1,1,n,dtype=torch.bool)
k=kv[3,0,:,:,:n]; v=kv[3,1,:,:,:n]
lens=torch.full((B,),n)
byt=2*B*H*n*hd*4
for rep in range(2):
  t=bench(lambda: F.scaled_dot_product_attention(q,k,v,attn_mask=mask))
  print(f"sdpa mask {t*1e3:.2f} ms {byt/t/1e9:.1f} GB/s")
  t=bench(lambda: torch.ops.dyrate.decode_attention(q[:,:,0],kv[3,0],kv[3,1],lens,None,None))
  print(f"ours {t*1e3:.2f} ms {byt/t/1e9:.1f} GB/s")
x=torch.randn(64<<20); t=bench(lambda: x.sum(),5); print(f"read {x.numel()*4/t/1e9:.1f} GB/s")
