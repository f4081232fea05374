import torch, statistics, sys
torch.ops.load_library("/tmp/s9/build_ca/ca_s9.so")
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense
from dyrate_engine.models.llama import LlamaDecoder
from dyrate_engine.engine.host_memory import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(2)
torch.ops.s9.set_block(64)
p = PRESETS["cpu-vllm"]; e = engine_for(p, build_model(p))
ids, vision = make_prompts(p, 1, 1)
new_qkv, new_ca = LlamaDecoder.qkv, LlamaDecoder.causal_attention
def old_qkv(self, layer, h, cos, sin, last_query_only=False):
    q, k, v = new_qkv(self, layer, h, cos, sin)
    v = v.contiguous()
    return (q[:, :, -1:] if last_query_only else q), k, v
def old_ca(q, k, v): return torch.ops.s9.causal_attention(q, k, v, None)
def switch(old):
    LlamaDecoder.qkv = old_qkv if old else new_qkv
    LlamaDecoder.causal_attention = staticmethod(old_ca) if old else staticmethod(new_ca)
times = {"old": [], "new": []}; toks = {}
for r in range(int(sys.argv[1]) + 1):
    for name in (("old", "new") if r % 2 else ("new", "old")):
        switch(name == "old")
        out = e.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=2)
        toks.setdefault(name, out[0].token_ids)
        if r: times[name].append(out[0].stats.prefill_ms)
ratios = [a / b for a, b in zip(times["old"], times["new"])]
print(f"prefill ms old {statistics.median(times['old']):.1f} new {statistics.median(times['new']):.1f}; paired speedup {statistics.median(ratios):.3f}x [{min(ratios):.3f}, {max(ratios):.3f}] over {len(ratios)} rounds; same tokens: {toks['old'] == toks['new']}")
