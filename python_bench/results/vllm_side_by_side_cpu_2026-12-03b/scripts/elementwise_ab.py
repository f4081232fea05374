import time, statistics, torch, sys
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense
from dyrate_engine.models import llama
from dyrate_engine import ops
torch.set_num_threads(2)
B=int(sys.argv[1]) if len(sys.argv)>1 else 1
p = PRESETS["cpu-vllm"]; hf = build_model(p); eng = engine_for(p, hf, prepack=False)
ids, vis = make_prompts(p, B, 1)
D = llama.LlamaDecoder
fused = {k: D.__dict__[k] for k in ("rms_norm", "add_rms_norm", "rope_heads", "silu_mul")}
ref = {"rms_norm": lambda self, x, w: ops.rms_norm_reference(x, w, self.eps),
       "add_rms_norm": lambda self, x, r, w: ops.add_rms_norm_reference(x, r, w, self.eps),
       "rope_heads": staticmethod(ops.rope_reference), "silu_mul": staticmethod(ops.silu_mul_reference)}
def use(table):
    for k, v in table.items(): setattr(D, k, v)
cpu = {"ref": [], "fused": []}
def run(name=None):
    c = time.process_time()
    r = eng.generate_ids(ids, policy=Dense(), max_new_tokens=2, **vis)
    if name: cpu[name].append(time.process_time() - c)
    return r[0].stats.prefill_ms
use(ref); run(); use(fused); run()
ts = {"ref": [], "fused": []}; ratios = []
for i in range(8):
    for name, table in (("ref", ref), ("fused", fused)) if i % 2 == 0 else (("fused", fused), ("ref", ref)):
        use(table); ts[name].append(run(name))
    ratios.append(ts["ref"][-1] / ts["fused"][-1])
print(B, {k: round(statistics.median(v), 1) for k, v in ts.items()}, "paired ratio median", round(statistics.median(ratios), 3), [round(r, 2) for r in sorted(ratios)])
print("cpu s", {k: round(statistics.median(v), 3) for k, v in cpu.items()}, "ratio", round(statistics.median([a/b for a,b in zip(cpu["ref"], cpu["fused"])]),3))
