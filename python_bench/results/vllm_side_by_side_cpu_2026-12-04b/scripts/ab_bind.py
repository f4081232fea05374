import torch, statistics, sys
torch.ops.load_library("/tmp/s9/bind/s9bind.so")
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense
from dyrate_engine.engine.host_memory import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(2)
p = PRESETS["cpu-vllm"]; e = engine_for(p, build_model(p))
ids, vision = make_prompts(p, 1, 1)
times = {"free": [], "bound": []}
for r in range(int(sys.argv[1]) + 1):
    for name in (("free", "bound") if r % 2 else ("bound", "free")):
        n = torch.ops.s9bind.bind(1 if name == "bound" else 0)
        out = e.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=2)
        if r: times[name].append(out[0].stats.prefill_ms)
ratios = [a / b for a, b in zip(times["free"], times["bound"])]
print(n, f"prefill ms free {statistics.median(times['free']):.1f} bound {statistics.median(times['bound']):.1f}; paired speedup {statistics.median(ratios):.3f}x [{min(ratios):.3f}, {max(ratios):.3f}] over {len(ratios)}")
