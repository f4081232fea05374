import torch, statistics, sys
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense
from dyrate_engine.models.llama import LlamaDecoder
from dyrate_engine.engine.host_memory import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(2)
p = PRESETS["cpu-vllm"]; e = engine_for(p, build_model(p))
ids, vision = make_prompts(p, 1, 1)
fused = LlamaDecoder.linear_add
def unfused(self, x, weight, bias, residual): return residual + self.linear(x, weight, bias)
times = {"unfused": [], "fused": []}; toks = {}
for r in range(int(sys.argv[1]) + 1):
    for name in (("unfused", "fused") if r % 2 else ("fused", "unfused")):
        LlamaDecoder.linear_add = fused if name == "fused" else unfused
        out = e.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=2, output_logits=True)
        toks.setdefault(name, (out[0].token_ids, out[0].logits))
        if r: times[name].append(out[0].stats.prefill_ms)
ratios = [a / b for a, b in zip(times["unfused"], times["fused"])]
print(f"prefill ms unfused {statistics.median(times['unfused']):.1f} fused {statistics.median(times['fused']):.1f}; paired speedup {statistics.median(ratios):.3f}x [{min(ratios):.3f}, {max(ratios):.3f}] over {len(ratios)} rounds; same tokens: {toks['unfused'][0] == toks['fused'][0]}, logits max diff {(toks['unfused'][1] - toks['fused'][1]).abs().max().item():.2e}")
