"""The engine's half of paired.py: the cpu-vllm preset's engine, answering one timed call per
stdin line, as run_vllm.py --stdin does for vLLM. Run with the PROJECT's venv:

    .venv/bin/python python_bench/vllm_cpu/run_engine.py --batch 1,8,16 --new-tokens 64 --out F.json

Each call is one of ``dyrate bench e2e``'s (the same random-weight checkpoint, ``make_prompts(
preset, B, 1)``, Dense, EOS ignored), made as ``dyrate serve`` runs the engine (freed heap kept,
``engine.host_memory``), and reports the engine's prefill (its start to the first token) and, as
vLLM's decode_tok_s is defined, B * (N - 1) over the decode steps' summed time. Prints READY after one warm-up call per batch size, then ``CALL
{json}`` per call; at EOF writes every call to ``--out``.
"""
import argparse
import json
import platform
import sys
import time

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.engine.host_memory import keep_freed_memory
from dyrate_engine.policies import Dense


def one_call(engine, ids, vision, new_tokens):
    """One generate call as a server makes it: no heap trimming before it (``dyrate bench e2e``
    trims to measure each call's peak memory; vLLM's process does not)."""
    start = time.perf_counter()
    results = engine.generate_ids(ids, policy=Dense(), max_new_tokens=new_tokens,
                                  ignore_eos=True, **vision)
    wall = time.perf_counter() - start
    assert all(len(r.token_ids) == new_tokens for r in results)
    return results, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    ap.add_argument("--batch", default="1,8,16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    preset = PRESETS[args.preset]
    keep_freed_memory()  # as dyrate serve does
    engine = engine_for(preset, build_model(preset))
    inputs = {b: make_prompts(preset, b, 1) for b in batches}
    started, calls, rounds = time.strftime("%Y-%m-%d %H:%M:%S"), [], {}
    for b in batches:  # warm-up: the first call of a batch size also measures MKL packing
        one_call(engine, *inputs[b], args.new_tokens)
    print("READY", flush=True)
    for line in sys.stdin:
        b = int(line)
        if b not in inputs:
            sys.exit(f"batch {b} was not warmed up (--batch {args.batch})")
        rounds[b] = rounds.get(b, -1) + 1
        results, wall = one_call(engine, *inputs[b], args.new_tokens)
        stats = results[0].stats
        row = {"batch": b, "round": rounds[b], "prefill_s": stats.prefill_ms / 1e3,
               "decode_tok_s": b * len(stats.step_ms) / sum(stats.step_ms) * 1e3,
               "wall_s": wall, "step_ms": list(stats.step_ms),
               "tokens": [r.token_ids for r in results]}
        calls.append(row)
        print("CALL " + json.dumps({k: row[k] for k in ("batch", "round", "prefill_s",
                                                         "decode_tok_s", "wall_s")}), flush=True)
    with open(args.out, "w") as f:
        json.dump({"tool": "run_engine.py", "argv": sys.argv, "started": started,
                   "versions": {"torch": torch.__version__, "python": platform.python_version(),
                                "platform": platform.platform()},
                   "prefill_packed_bytes": engine.decoder.prefill_packed.nbytes,
                   "packed_weights_bytes": engine.decoder.packed.nbytes, "calls": calls}, f)


if __name__ == "__main__":
    main()
