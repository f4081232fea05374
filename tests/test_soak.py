"""The server's soak (opt-in: ``make soak``, minutes): ``DYRATE_SOAK_REQUESTS`` requests (default
1,000) to a real server on the demo model, 8 at a time. The mix: Dense, Schedule and DyRate;
greedy and sampled; every seventh stream closed after its first chunk; every tenth request bad.
Every bad request gets its 400 and nothing else fails; the server's resident memory at the end
is within 10% of its level after the first 100 requests; no slot, queue entry or listener is
left."""
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("DYRATE_SOAK") != "1",
                                reason="opt-in: make soak (DYRATE_SOAK=1)")


def resident_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_soak():
    import urllib.request

    from PIL import Image

    from dyrate_engine import Engine
    from dyrate_engine.bundled import EXAMPLE_IMAGE
    from dyrate_engine.serve.app import ChatServer, build_app
    from serving import data_url, post, running, user

    total = int(os.environ.get("DYRATE_SOAK_REQUESTS", "1000"))
    server = ChatServer(Engine.from_pretrained("demo"), model_name="demo", policy="dyrate",
                        max_batch=4, max_queue=64, default_max_tokens=8)
    K = server.scheduler.prune_layer
    specs = ["dense", f"schedule:{K}:0.5", "dyrate", f"schedule:{K}:0,0.4,0.8"]
    base = Image.open(EXAMPLE_IMAGE).convert("RGB")
    good = [data_url(base.rotate(15 * i)) for i in range(8)]

    def one(i: int, url: str) -> str:
        if i % 10 == 9:
            status, _ = post(url, json.dumps({"messages": user("data:image/png;base64,@@")})
                             .encode())
            return "bad" if status == 400 else f"bad request got {status}"
        body = {"messages": user(good[i % 8]), "max_tokens": 1 + i % 12,
                "dyrate_policy": specs[i % 4], "temperature": 0.0 if i % 3 else 0.8,
                "seed": i, "stream": i % 7 == 3}
        if not body["stream"]:
            status, reply = post(url, json.dumps(body).encode())
            return "ok" if status == 200 and reply["choices"] else f"got {status}: {reply}"
        request = urllib.request.Request(url + "/v1/chat/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            response.readline()  # the first chunk, then the client goes away
        return "cancelled"

    outcomes, rss_after_100 = [], None
    with running(build_app(server)) as url, ThreadPoolExecutor(8) as pool:
        for start in range(0, total, 100):
            outcomes += pool.map(lambda i: one(i, url), range(start, min(total, start + 100)))
            if rss_after_100 is None:
                rss_after_100 = resident_mib()
        deadline = time.time() + 60
        while server.scheduler.has_work and time.time() < deadline:
            time.sleep(0.1)
        rss_end = resident_mib()
        leftovers = (server.scheduler.running, len(server.scheduler.waiting),
                     len(server.loop._listeners))
    failures = [o for o in outcomes if o not in ("ok", "bad", "cancelled")]
    print(f"soak: {total} requests, {outcomes.count('ok')} ok, {outcomes.count('bad')} bad, "
          f"{outcomes.count('cancelled')} cancelled; resident {rss_after_100:.0f} MiB after "
          f"100, {rss_end:.0f} MiB at the end")
    assert not failures, failures[:5]
    assert leftovers == (0, 0, 0)
    assert rss_end <= 1.10 * rss_after_100
