import torch, time, statistics, sys
torch.set_num_threads(2)
from dyrate_engine import ops
L=12
shapes=[(2304,768),(768,768),(4096,768),(768,2048)]
Ms=[int(m) for m in sys.argv[1].split(',')]
W=[[torch.randn(N,K) for N,K in shapes] for _ in range(L)]
wbytes=sum(N*K*4 for N,K in shapes)*L
D1=[[torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in ws] for ws in W]
D609=[[torch.ops.mkldnn._reorder_linear_weight(w, 609) for w in ws] for ws in W]
for M in Ms:
    xs=[torch.randn(M,K) for N,K in shapes]
    PK=[[torch.ops.mkl._mkl_reorder_linear_weight(w, M) for w in ws] for ws in W]
    DM=[[torch.ops.mkldnn._reorder_linear_weight(w, M) for w in ws] for ws in W]
    def mk(kind, P=None):
        def run():
            for li,ws in enumerate(W):
                for j,(x,w) in enumerate(zip(xs,ws)):
                    if kind=='dl': torch.ops.dyrate.decode_linear(x,w,None)
                    elif kind=='lin': torch.nn.functional.linear(x,w)
                    elif kind=='pk': torch.ops.mkl._mkl_linear(x,P[li][j],w,None,M)
                    else: torch.ops.mkldnn._linear_pointwise(x,P[li][j],None,"none",[],"")
        return run
    fns={'decode_linear':mk('dl'),'F.linear':mk('lin'),'mkl_pk':mk('pk',PK),'dnn_M':mk('dnn',DM),'dnn_1':mk('dnn',D1),'dnn_609':mk('dnn',D609)}
    ts={k:[] for k in fns}
    for f in fns.values(): f()
    for it in range(7 if M>100 else 15):
        for k,f in fns.items():
            t=time.perf_counter(); f(); ts[k].append(time.perf_counter()-t)
    fl=2*M*wbytes/4
    print(M, " | ".join(f"{k} {statistics.median(v)*1e3:.1f}ms {fl/statistics.median(v)/1e9:.0f}GF" for k,v in ts.items()), flush=True)
