"""``dyrate bench serve``: a bounded load generator against a running ``dyrate serve`` on this
machine (127.0.0.1 only), like ``vllm bench serve``.

Requests arrive at a fixed rate or as a Poisson process (``--rate``; 0 sends each as soon as one
of the ``--concurrency`` in-flight places frees), each streamed, with output lengths drawn
(seeded) from ``--max-tokens MIN:MAX`` (uniform, or ``--length-dist log-uniform``: many
short answers and a long tail, the shape of chat traffic) and ``ignore``d EOS so the lengths
hold. The run is repeated per ``--policies`` entry (the request's ``dyrate_policy``) on the
same request list.
Reported per policy: requests/s, output tokens/s, time to first token and time per output token
(p50 / p99), errors.

    dyrate bench serve --url http://127.0.0.1:8000 --requests 64 --concurrency 16 \\
        --policies dense schedule:3:0.75 --max-tokens 16:96 --json out/serve.json
"""
from __future__ import annotations

import base64
import json
import math
import random
import statistics
import threading
import time
import urllib.request
from urllib.parse import urlparse

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser) -> None:
    from ..bundled import EXAMPLE_IMAGE

    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback)")
    parser.add_argument("--requests", type=int, default=32, help="requests per policy")
    parser.add_argument("--concurrency", type=int, default=16, help="most requests in flight")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="arrivals per second (0: as fast as the concurrency allows)")
    parser.add_argument("--arrivals", default="poisson", choices=["poisson", "fixed"])
    parser.add_argument("--policies", nargs="+", default=["dense"],
                        help="dyrate_policy of the requests, one run each")
    parser.add_argument("--max-tokens", default="16:64", help="output lengths MIN:MAX (seeded)")
    parser.add_argument("--length-dist", default="uniform", choices=["uniform", "log-uniform"],
                        help="how output lengths spread over MIN:MAX")
    parser.add_argument("--image", default=str(EXAMPLE_IMAGE), help="the requests' image file")
    parser.add_argument("--prompt", default="Describe the image in detail.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--plot", default=None,
                        help="also draw requests/s and TTFT / TPOT per policy to this PNG")


def output_lengths(spec: str, n: int, seed: int, dist: str = "uniform") -> list[int]:
    low, _, high = spec.partition(":")
    low, high = int(low), int(high or low)
    if not 1 <= low <= high:
        raise ValueError(f"--max-tokens must be MIN:MAX with 1 <= MIN <= MAX, got {spec!r}")
    rng = random.Random(seed)
    if dist == "log-uniform":
        return [min(high, max(low, round(math.exp(rng.uniform(math.log(low), math.log(high))))))
                for _ in range(n)]
    return [rng.randint(low, high) for _ in range(n)]


def _one(url: str, body: dict) -> dict:
    """Stream one request; its TTFT, time per output token and tokens (or its error)."""
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = None
    usage = None
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            for line in response:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                now = time.perf_counter()
                if chunk["choices"][0]["delta"].get("content"):
                    first = first or now
                    last = now
                usage = chunk.get("usage") or usage
    except Exception as error:  # counted, reported, never fatal to the run
        return {"error": f"{type(error).__name__}: {error}"}
    tokens = usage["completion_tokens"] if usage else 0
    tpot = (last - first) / (tokens - 1) if first and tokens > 1 else None
    return {"ttft": (first or time.perf_counter()) - start, "tpot": tpot, "tokens": tokens,
            "end": time.perf_counter()}


def run_policy(args, policy: str, image_url: str, lengths: list[int]) -> dict:
    rng = random.Random(args.seed)
    gaps = [0.0] * len(lengths) if args.rate <= 0 else [
        rng.expovariate(args.rate) if args.arrivals == "poisson" else 1 / args.rate
        for _ in lengths]
    slots = threading.Semaphore(args.concurrency)
    results: list[dict] = [{} for _ in lengths]
    threads = []

    def worker(i: int, n: int) -> None:
        try:
            results[i] = _one(args.url, {
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": args.prompt}]}],
                "max_tokens": n, "temperature": 0, "stream": True, "dyrate_policy": policy,
                "ignore_eos": True})
        finally:
            slots.release()

    start = time.perf_counter()
    for i, (gap, n) in enumerate(zip(gaps, lengths)):
        time.sleep(gap)
        slots.acquire()
        thread = threading.Thread(target=worker, args=(i, n), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return _summary(policy, results, time.perf_counter() - start)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _summary(policy: str, results: list[dict], elapsed: float) -> dict:
    done = [r for r in results if "error" not in r]
    ttft = [r["ttft"] for r in done]
    tpot = [r["tpot"] for r in done if r["tpot"] is not None]
    return dict(policy=policy, requests=len(results), errors=len(results) - len(done),
                seconds=elapsed, requests_per_s=len(done) / elapsed,
                output_tokens_per_s=sum(r["tokens"] for r in done) / elapsed,
                ttft_p50=_percentile(ttft, 0.5), ttft_p99=_percentile(ttft, 0.99),
                tpot_p50=_percentile(tpot, 0.5), tpot_p99=_percentile(tpot, 0.99),
                first_errors=[r["error"] for r in results if "error" in r][:3])


def run(args) -> list[dict]:
    host = urlparse(args.url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"bench serve loads servers on this machine only (127.0.0.1), got "
                         f"{args.url!r}")
    if args.requests < 1 or args.concurrency < 1:
        raise ValueError("--requests and --concurrency must be >= 1")
    with open(args.image, "rb") as f:
        image_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    lengths = output_lengths(args.max_tokens, args.requests, args.seed, args.length_dist)
    rows = [run_policy(args, policy, image_url, lengths) for policy in args.policies]
    print(f"# {args.url}: {args.requests} requests per policy, concurrency {args.concurrency}, "
          f"rate {args.rate or 'unbounded'} ({args.arrivals}), output tokens {args.max_tokens} "
          f"({args.length_dist}, mean {sum(lengths) / len(lengths):.0f})")
    print(f"{'policy':<24}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'p99':>8}"
          f"{'TPOT p50':>10}{'p99':>8}{'errors':>8}")
    for r in rows:
        ms = lambda v: f"{v * 1e3:.0f}" if v is not None else "-"  # noqa: E731
        print(f"{r['policy']:<24}{r['requests_per_s']:8.2f}{r['output_tokens_per_s']:11.1f}"
              f"{ms(r['ttft_p50']):>10}{ms(r['ttft_p99']):>8}{ms(r['tpot_p50']):>10}"
              f"{ms(r['tpot_p99']):>8}{r['errors']:>8}")
    if args.plot:
        plot(rows, args.plot, f"{args.requests} requests, concurrency {args.concurrency}")
    if args.json:
        from .report import machine_info, save_json
        options = {k: v for k, v in vars(args).items() if not callable(v)}
        save_json(dict(args=options, rows=rows, machine=machine_info("cpu")), args.json)
    return rows


def plot(rows: list[dict], path: str, title: str) -> None:
    """Requests/s, and TTFT and TPOT (p50 bars, p99 whiskers), per policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["policy"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].bar(names, [r["requests_per_s"] for r in rows])
    axes[0].set_ylabel("requests / s")
    for ax, key, label in ((axes[1], "ttft", "TTFT, s"), (axes[2], "tpot", "TPOT, s")):
        p50 = [r[f"{key}_p50"] or 0 for r in rows]
        p99 = [r[f"{key}_p99"] or 0 for r in rows]
        ax.bar(names, p50, yerr=[[0] * len(rows), [b - a for a, b in zip(p50, p99)]], capsize=4)
        ax.set_ylabel(label + " (p50; whisker p99)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
