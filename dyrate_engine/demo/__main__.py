"""``python -m dyrate_engine.demo`` (what ``make demo`` runs): caption the bundled example image
with the demo model, densely and with its trained DyRate predictor, and show what pruning did.

Both policies are warmed up first and timed over the same number of calls, so the prefill and
decode figures compare like with like (a first call pays one-time costs that are not the
policy's)."""
from __future__ import annotations

import argparse
import statistics
import time

from ..bundled import EXAMPLE_IMAGE
from ..engine import Engine
from ..models.images import open_image
from ..policies import Dense, DyRate

PROMPT = "Describe the image."
TIMED_CALLS = 3


def _kept_runs(kept: list[int]) -> str:
    """``144 x1, 72 x5, 36 x12``: the kept visual tokens per step, run-length encoded."""
    runs = []
    for k in kept:
        if runs and runs[-1][0] == k:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    return ", ".join(f"{k} x{n}" for k, n in runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(EXAMPLE_IMAGE))
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    engine = Engine.from_pretrained("demo")
    policies = {"dense": Dense(), "dyrate": DyRate.from_pretrained("demo")}
    image = open_image(args.image)
    print(f"demo model loaded in {time.perf_counter() - start:.1f} s; image {args.image}")
    print(f"prompt: {args.prompt}\n")
    for policy in policies.values():  # warm-up: first-call costs land here, not in the figures
        engine.generate(image, args.prompt, policy, max_new_tokens=args.max_new_tokens)
    for name, policy in policies.items():
        runs = [engine.generate(image, args.prompt, policy, max_new_tokens=args.max_new_tokens)[0]
                for _ in range(TIMED_CALLS)]
        r, s = runs[-1], runs[-1].stats
        prefill = statistics.median(x.stats.prefill_ms for x in runs)
        decode = statistics.median(x.stats.decode_tokens_per_s for x in runs)
        print(f"[{policy.name}] {r.text}")
        print(f"  kept visual tokens per step: {_kept_runs(s.kept_visual)} (of {s.n_visual})")
        if name != "dense":
            print(f"  predicted rate per step: {', '.join(f'{x:g}' for x in s.rates)}")
        print(f"  FLOPs saved vs dense: {s.flops_saved:.1%}; {s.new_tokens} tokens; warm, median "
              f"of {TIMED_CALLS} calls: prefill {prefill:.1f} ms, decode {decode:.0f} tok/s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
