"""Two paths of the prefill in one process, on the same prompts, alternating per round:

- ``--compare last-row``: with and without the last layer's shortcut
  (``prefill_layers(last_row_only=...)``: the model's last layer computes every token's keys and
  values but only the last token's output);
- ``--compare causal-attention``: the layers' causal attention through ``dyrate.causal_attention``
  or through SDPA's causal path (``models.llama.CPU_CAUSAL_ATTENTION``);
- ``--compare prefill-packing``: the linears through the weights' oneDNN-packed copies
  (``ops.prefill_linear``, the engine's default on the CPU) or through ``at::linear``.

    python python_bench/bench_prefill_paths.py --compare causal-attention --preset cpu-vllm \\
        --batch 1 --rounds 8

Prints the engine's prefill milliseconds (``stats.prefill_ms``) of each path, medians over the
rounds, the paired ratio per round (its median and range), and whether both gave the same tokens.
"""
import argparse
import functools
import statistics

import torch

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.engine import prefill as prefill_module
from dyrate_engine.engine import runner
from dyrate_engine.models import llama
from dyrate_engine.policies import Dense


def _last_row(on: bool) -> None:
    prefill_module.prefill_layers = runner.prefill_layers if on else \
        functools.partial(runner.prefill_layers, last_row_only=False)


def _causal_attention(on: bool) -> None:
    llama.CPU_CAUSAL_ATTENTION = on


def _prefill_packing(decoder, on: bool) -> None:
    if on:
        decoder.prefill_packed.pack(decoder.prefill_weights())
    else:
        decoder.prefill_packed.release()


# Each switch: (its name, the baseline's name, the path's name).
SWITCHES = {"last-row": (_last_row, "all rows", "last row"),
            "causal-attention": (_causal_attention, "SDPA", "kernel"),
            "prefill-packing": (_prefill_packing, "at::linear", "oneDNN packed")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default="last-row", choices=list(SWITCHES))
    parser.add_argument("--preset", default="cpu-vllm", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    engine = engine_for(preset, build_model(preset))
    ids, vision = make_prompts(preset, args.batch, 1)
    switch, base, path = SWITCHES[args.compare]
    if args.compare == "prefill-packing":
        switch = functools.partial(switch, engine.decoder)
    times = {base: [], path: []}
    tokens = {}
    for round_ in range(args.rounds + 1):
        for name in (base, path):
            switch(name == path)
            out = engine.generate_ids(ids, policy=Dense(), **vision, max_new_tokens=2)
            tokens.setdefault(name, [r.token_ids for r in out])
            if round_:  # round 0 warms up
                times[name].append(out[0].stats.prefill_ms)
    switch(True)
    ratios = [a / b for a, b in zip(times[base], times[path])]
    print(f"{args.preset}, batch {args.batch}, {args.rounds} rounds: prefill ms {base} "
          f"{statistics.median(times[base]):.1f}, {path} {statistics.median(times[path]):.1f}; "
          f"paired speedup {statistics.median(ratios):.3f}x [{min(ratios):.3f}, "
          f"{max(ratios):.3f}]; same tokens: {tokens[base] == tokens[path]}", flush=True)


if __name__ == "__main__":
    main()
