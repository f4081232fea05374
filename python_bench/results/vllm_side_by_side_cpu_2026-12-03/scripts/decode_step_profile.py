import sys, statistics, torch
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense, Schedule
from torch.profiler import profile, ProfilerActivity
torch.set_num_threads(2)
B=int(sys.argv[1]); pol=sys.argv[2] if len(sys.argv)>2 else "dense"
p = PRESETS["cpu-vllm"]; hf = build_model(p); eng = engine_for(p, hf)
ids, vis = make_prompts(p, B, 1)
mk=lambda: Dense() if pol=="dense" else Schedule([0.75], prune_layer=3)
run = lambda n: eng.generate_ids(ids, policy=mk(), max_new_tokens=n, **vis)
run(3)
def prof(n):
    with profile(activities=[ProfilerActivity.CPU]) as pr:
        r=run(n)
    return {e.key:(e.self_cpu_time_total, e.count) for e in pr.key_averages()}, r
a,_=prof(2); b,r=prof(22)
steps=20
print("step median", statistics.median(r[0].stats.step_ms))
rows=[(k,(b[k][0]-a.get(k,(0,0))[0])/steps/1e3,(b[k][1]-a.get(k,(0,0))[1])/steps) for k in b]
rows.sort(key=lambda x:-x[1])
tot=sum(x[1] for x in rows)
print(f"per-step self total {tot:.1f} ms")
for k,t,c in rows[:25]: print(f"{k:50s} {t:7.2f} ms  {c:6.1f} calls")
