import torch
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.policies import Dense
from dyrate_engine.engine.host_memory import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(2)
p = PRESETS["cpu-vllm"]; e = engine_for(p, build_model(p))
ids, vision = make_prompts(p, 1, 1)
for _ in range(3): e.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=1)
from torch.profiler import profile
with profile(record_shapes=True) as prof:
    for _ in range(3): e.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=1)
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=90))
