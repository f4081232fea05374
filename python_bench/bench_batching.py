"""Continuous against static batching in one process: the same request stream through the
engine's scheduler (``Engine.scheduler``) in both of its modes, and through the engine's batched
``generate``, interleaved round by round.

Two static baselines. ``generate`` is static batching as a batched generate call does it: the
stream in consecutive batches of ``--slots`` requests, each batch run to its longest request, a
finished row decoding on (reading its growing cache) until then. ``static`` is the scheduler's
static mode, a stronger baseline: a batch is still admitted only when the last one has ended, but
a finished row's cache is freed at once, so it costs a row of each matmul and no attention.

Every request has its own prompt and image (the preset's shapes) and an output length drawn,
seeded, from MIN:MAX (uniform or log-uniform, EOS ignored); all are queued at once and at most
``--slots`` run together. Reported per round and policy: requests/s of each mode and their ratio
(continuous over each baseline), decode steps, and the prefill seconds (the same work in every
mode).

    python python_bench/bench_batching.py --preset cpu-vllm --requests 48 --max-tokens 16:512 \\
        --length-dist log-uniform --policies dense schedule:3:0.75 --rounds 2
"""
import argparse
import statistics
import time

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.bench.serve import output_lengths
from dyrate_engine.engine import Request, SamplingParams
from dyrate_engine.policies.spec import parse_policy

BASELINES = ("generate", "static")


def run_once(engine, batching, spec, ids, vision, lengths, slots, prune_layer):
    scheduler = engine.scheduler(max_batch=slots, prune_layer=prune_layer,
                                 max_queue=len(ids), batching=batching)
    handles = []
    for i, n in enumerate(lengths):
        policy = None if spec == "dense" else parse_policy(spec)
        own = {name: value[i:i + 1] for name, value in vision.items()}
        handles.append(scheduler.submit(Request(ids[i], own, policy, SamplingParams(
            max_new_tokens=n, ignore_eos=True))))
    start, steps = time.perf_counter(), 0
    while scheduler.has_work:
        scheduler.step()
        steps += 1
    wall = time.perf_counter() - start
    assert all(h.status == "finished" for h in handles)
    prefill = sum(h.result().stats.prefill_ms for h in handles) / 1e3
    return len(ids) / wall, steps, prefill


def run_generate(engine, spec, ids, vision, lengths, slots):
    """The stream through ``generate_ids`` in batches of ``slots``; each batch decodes until its
    longest request has its tokens (EOS ignored), the shorter ones keep their rows till then."""
    start, steps, prefill = time.perf_counter(), 0, 0.0
    for first in range(0, len(ids), slots):
        part = slice(first, first + slots)
        policy = None if spec == "dense" else parse_policy(spec)
        longest = max(lengths[part])
        results = engine.generate_ids(ids[part], **{k: v[part] for k, v in vision.items()},
                                      policy=policy, max_new_tokens=longest, ignore_eos=True)
        assert all(len(r.token_ids) == longest for r in results)
        steps += longest - 1
        prefill += results[0].stats.prefill_ms / 1e3
    return len(ids) / (time.perf_counter() - start), steps, prefill


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--max-tokens", default="16:512")
    parser.add_argument("--length-dist", default="log-uniform", choices=["uniform", "log-uniform"])
    parser.add_argument("--policies", nargs="+", default=["dense", "schedule:3:0.75"])
    parser.add_argument("--prune-layer", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-generate", action="store_true",
                        help="leave out the batched-generate baseline (the slowest mode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    engine = engine_for(preset, build_model(preset))
    ids, vision = make_prompts(preset, args.requests, 1)
    lengths = output_lengths(args.max_tokens, args.requests, 0, args.length_dist)
    print(f"# {args.preset}: {args.requests} requests, {args.slots} slots, output tokens "
          f"{args.max_tokens} {args.length_dist} (mean {sum(lengths) / len(lengths):.0f}), "
          f"{args.threads} threads")
    ratios = {(spec, base): [] for spec in args.policies for base in BASELINES}
    for round_ in range(1, args.rounds + 1):
        for spec in args.policies:
            got = {mode: run_once(engine, mode, spec, ids, vision, lengths, args.slots,
                                  args.prune_layer) for mode in ("continuous", "static")}
            if not args.no_generate:
                got["generate"] = run_generate(engine, spec, ids, vision, lengths, args.slots)
            for base in BASELINES:
                if base in got:
                    ratios[spec, base].append(got["continuous"][0] / got[base][0])
            print(f"round {round_} {spec:<18} " + "  ".join(
                f"{mode} {rps:.3f} req/s, {steps} steps, prefill {pre:.1f} s"
                for mode, (rps, steps, pre) in got.items()) + "  ratio " + ", ".join(
                f"{got['continuous'][0] / got[b][0]:.2f}x over {b}" for b in BASELINES
                if b in got), flush=True)
    for (spec, base), values in ratios.items():
        if values:
            print(f"{spec}: continuous / {base} median {statistics.median(values):.2f}x "
                  f"[{min(values):.2f}, {max(values):.2f}] over {len(values)} rounds")


if __name__ == "__main__":
    main()
