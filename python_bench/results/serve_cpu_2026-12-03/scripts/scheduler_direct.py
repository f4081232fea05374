import time, random, sys, torch
from PIL import Image
from dyrate_engine import Engine, Schedule
from dyrate_engine.engine import Request, SamplingParams
torch.set_num_threads(2)
e = Engine.from_pretrained('/work/vllm_env/ckpt')
img = Image.open('/work/main/dyrate_engine/demo/example.png')
ids, vision = e.model.encode_chat([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image in detail."}]}], [img])
lo, hi = map(int, sys.argv[2].split(":")) if len(sys.argv) > 2 else (16, 128)
pols = sys.argv[3].split(",") if len(sys.argv) > 3 else ["dense", "schedule"]
rng = random.Random(0); lengths = [rng.randint(lo, hi) for _ in range(32)]
for batching in sys.argv[1].split(","):
  for pol in pols:
    s = e.scheduler(max_batch=16, prune_layer=3, max_queue=64, batching=batching)
    hs = [s.submit(Request(ids, vision, None if pol == "dense" else Schedule([0.75], 3), SamplingParams(max_new_tokens=n, ignore_eos=True))) for n in lengths]
    t = time.perf_counter(); steps = 0; pre = 0.0; dec = 0.0
    while s.has_work:
        a = time.perf_counter(); n0 = s.running; before = sum(h.status != "waiting" for h in hs)
        s.step(); steps += 1
    wall = time.perf_counter() - t
    pf = sum(h.result().stats.prefill_ms for h in hs) / 1e3
    print(batching, pol, f"wall {wall:.1f} s, {32/wall:.2f} req/s, steps {steps}, prefill total {pf:.1f} s", flush=True)
