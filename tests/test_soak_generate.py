"""The engine's soak (opt-in: ``make soak``, minutes): ``DYRATE_SOAK_CALLS`` generate calls
(default 1,000) on the demo model. The mix: Dense, FastV, Schedule and DyRate; batches of 1-8
drawn from a pool of requests (images, prompts, lengths); greedy and sampled; a bad call every
tenth. Every bad call raises its clear error; every greedy answer equals the same request run
alone; sampled answers are valid; the resident memory at the end is within 5% of its level
after the first 100 calls."""
import os
import random
import re

import numpy as np
import pytest

from test_soak import resident_mib

pytestmark = pytest.mark.skipif(os.environ.get("DYRATE_SOAK") != "1",
                                reason="opt-in: make soak (DYRATE_SOAK=1)")


def _bad_calls(engine, image, K):
    """(call, the error it must raise, a fragment of its message), one per kind of bad input."""
    from dyrate_engine import Schedule

    ask = ["Describe the image."]
    return [
        (lambda: engine.generate(["not an image"], ask), ValueError, "unsupported image type"),
        (lambda: engine.generate([image, image], ask), ValueError, "one entry per prompt"),
        (lambda: engine.generate([image], ask, max_new_tokens=0), ValueError, "max_new_tokens"),
        (lambda: engine.generate([image], ask, temperature=-1.0), ValueError, "temperature"),
        (lambda: engine.generate([image], ask, temperature=1.0, top_p=1.5), ValueError, "top_p"),
        (lambda: engine.generate([image], ["word " * 5000]), ValueError, "exceeds the engine's"),
        (lambda: engine.generate([np.zeros((4, 4, 5), np.uint8)], ask), ValueError, "[H, W, 3]"),
        (lambda: engine.generate([image], ask, Schedule([0.5], 99)), ValueError, "monitor layer"),
        (lambda: engine.generate([image], ask, Schedule([1.5], K)), ValueError, "rates must be"),
        (lambda: engine.generate([image], ask, max_tokens=3), TypeError, "max_tokens"),
    ]


def test_generate_soak():
    from PIL import Image

    from dyrate_engine import Engine
    from dyrate_engine.bundled import EXAMPLE_IMAGE
    from dyrate_engine.policies.spec import parse_policy

    total = int(os.environ.get("DYRATE_SOAK_CALLS", "1000"))
    engine = Engine.from_pretrained("demo")
    K = 3
    specs = ["dense", f"fastv:{K}:0.5", f"schedule:{K}:0.25,0.6", "dyrate"]
    base = Image.open(EXAMPLE_IMAGE).convert("RGB")
    images = [base.rotate(20 * i) for i in range(6)]
    prompts = ["Describe the image.", "What is in the picture?", "List the objects."]
    pool = [(i, p, 2 + (3 * i + 5 * p) % 14) for i in range(6) for p in range(3)]
    longest = max(n for _, _, n in pool)
    alone = {}  # (spec, request) -> the greedy tokens of the request run by itself, longest

    def run(spec, requests, **sampling):
        return engine.generate([images[i] for i, _, _ in requests],
                               [prompts[p] for _, p, _ in requests], parse_policy(spec),
                               max_new_tokens=max(n for _, _, n in requests), ignore_eos=True,
                               **sampling)

    rng, bad = random.Random(0), _bad_calls(engine, base, K)
    counts, rss_after_100 = {"good": 0, "sampled": 0, "bad": 0}, None
    for call in range(total):
        if call == min(100, total // 2):
            rss_after_100 = resident_mib()
        if call % 10 == 9:
            fn, error, fragment = bad[(call // 10) % len(bad)]
            with pytest.raises(error, match=re.escape(fragment)):
                fn()
            counts["bad"] += 1
            continue
        spec, requests = rng.choice(specs), rng.sample(pool, rng.randint(1, 8))
        if call % 4 == 3:  # sampled: valid tokens of the asked length
            results = run(spec, requests, temperature=0.9, top_p=0.9, seed=call)
            n = max(length for _, _, length in requests)
            assert all(len(r.token_ids) == n for r in results)
            counts["sampled"] += 1
            continue
        results = run(spec, requests)
        n = max(length for _, _, length in requests)
        for request, result in zip(requests, results):
            if (spec, request) not in alone:
                alone[spec, request] = run(spec, [request[:2] + (longest,)])[0].token_ids
            assert len(result.token_ids) == n, (call, spec, request)
            assert result.token_ids == alone[spec, request][:n], (call, spec, request)
        counts["good"] += 1
    rss_end = resident_mib()
    print(f"generate soak: {total} calls ({counts}); resident {rss_after_100:.0f} MiB after 100, "
          f"{rss_end:.0f} MiB at the end")
    assert rss_end <= 1.05 * rss_after_100
