import torch, time, statistics, sys, os
torch.set_num_threads(2)
from dyrate_engine import ops
L=12
shapes=[(2304,768),(768,768),(4096,768),(768,2048)]
W=[[torch.randn(N,K) for N,K in shapes] for _ in range(L)]
for M in [int(m) for m in sys.argv[1].split(',')]:
    xs=[torch.randn(M,K) for N,K in shapes]
    PK=[[torch.ops.mkl._mkl_reorder_linear_weight(w, M) for w in ws] for ws in W]
    def run(kind):
        for li,ws in enumerate(W):
            for j,(x,w) in enumerate(zip(xs,ws)):
                if kind=='dl': torch.ops.dyrate.decode_linear(x,w,None)
                elif kind=='pk': torch.ops.mkl._mkl_linear(x,PK[li][j],w,None,M)
                else: torch.nn.functional.linear(x,w)
    ts={'dl':[],'pk':[],'lin':[]}
    for k in ts: run(k)
    for it in range(15):
        for k in ts:
            t=time.perf_counter(); run(k); ts[k].append(time.perf_counter()-t)
    print(M, {k: round(statistics.median(v)*1e3,1) for k,v in ts.items()}, flush=True)
