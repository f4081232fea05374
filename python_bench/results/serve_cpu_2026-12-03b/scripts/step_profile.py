# The step profile of the serving notes: per-step decode time by rows stepped, continuous vs static
# batching (argv: requests, MIN:MAX output tokens, modes). Run from the repository root.
import sys, time, statistics, torch
from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.bench.serve import output_lengths
from dyrate_engine.engine import Request, SamplingParams
torch.set_num_threads(2)
preset = PRESETS["cpu-vllm"]
engine = engine_for(preset, build_model(preset))
n = int(sys.argv[1]); ids, vision = make_prompts(preset, n, 1)
lengths = output_lengths(sys.argv[2], n, 0, "log-uniform")
from dyrate_engine.engine import scheduler as S
for mode in sys.argv[3].split(","):
    s = engine.scheduler(max_batch=16, prune_layer=3, max_queue=n, batching=mode)
    hs = [s.submit(Request(ids[i], {k: v[i:i+1] for k, v in vision.items()}, None, SamplingParams(max_new_tokens=L, ignore_eos=True))) for i, L in enumerate(lengths)]
    rec = []
    while s.has_work:
        before = sum(h.status == "waiting" for h in hs)
        t = time.perf_counter(); 
        rows = None
        s._drop_cancelled(); new = s._admit(); t1 = time.perf_counter()
        if s.running:
            rows = s._rows_to_step(); s._decode()
        t2 = time.perf_counter()
        rec.append((rows, (t1 - t) * 1e3, (t2 - t1) * 1e3, len(new)))
    by = {}
    for rows, a, d, k in rec:
        if rows: by.setdefault((rows, k > 0), []).append(d)
    print(mode, "total", sum(a + d for _, a, d, _ in rec) / 1e3, "s; admit", sum(a for _, a, _, _ in rec) / 1e3, "s")
    for key in sorted(by): print("  rows", key[0], "after admission" if key[1] else "", len(by[key]), "steps, median", round(statistics.median(by[key]), 1), "ms")
