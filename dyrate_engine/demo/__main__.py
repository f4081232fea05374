"""``python -m dyrate_engine.demo`` (what ``make demo`` runs): caption the bundled example image
with the demo model, densely and with its trained DyRate predictor, and show what pruning did."""
from __future__ import annotations

import argparse
import time

from . import DEMO_DIR

EXAMPLE = DEMO_DIR / "example.png"
PROMPT = "Describe the image."


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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default=str(EXAMPLE))
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)

    from PIL import Image

    from .. import Dense, DyRate, Engine

    start = time.perf_counter()
    engine = Engine.from_pretrained("demo")
    policy = DyRate.from_pretrained("demo")
    image = Image.open(args.image)
    print(f"demo model loaded in {time.perf_counter() - start:.1f} s; image {args.image}")
    print(f"prompt: {args.prompt}\n")
    engine.generate(image, args.prompt, max_new_tokens=4)  # warm-up: first-call costs
    for name, p in (("dense", Dense()), (policy.name, policy)):
        [r] = engine.generate(image, args.prompt, policy=p, max_new_tokens=48)
        s = r.stats
        print(f"[{name}] {r.text}")
        print(f"  kept visual tokens per step: {_kept_runs(s.kept_visual)} (of {s.n_visual})")
        if name != "dense":
            print(f"  predicted rate per step: {', '.join(f'{x:g}' for x in s.rates)}")
        print(f"  FLOPs saved vs dense: {s.flops_saved:.1%}; {s.new_tokens} tokens, prefill "
              f"{s.prefill_ms:.1f} ms, decode {s.decode_tokens_per_s:.0f} tok/s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
