"""``dyrate serve`` over HTTP: a real server on 127.0.0.1 (a free port, torn down after) and the
official ``openai`` client. Answers, whole and streamed, equal ``engine.generate`` of the same
request; 16 concurrent requests each get their own answer; a stream closed early frees its slot;
every bad input gets its 4xx and the next good request succeeds."""
import base64
import copy
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from dyrate_engine import Engine  # noqa: E402
from dyrate_engine.bundled import EXAMPLE_IMAGE  # noqa: E402
from dyrate_engine.policies.spec import parse_policy  # noqa: E402
from dyrate_engine.serve.app import ChatServer, build_app  # noqa: E402
from dyrate_engine.serve.protocol import ImageRules  # noqa: E402
from serving import PROMPT, data_url, free_port, post, running, user  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = Engine.from_pretrained("demo")
    allowed = tmp_path_factory.mktemp("images")
    Image.open(EXAMPLE_IMAGE).save(allowed / "example.png")
    server = ChatServer(engine, model_name="demo", policy="dyrate", max_batch=4, max_queue=32,
                        rules=ImageRules(max_images=2, max_pixels=1 << 20,
                                         local_dir=str(allowed)), default_max_tokens=12)
    with running(build_app(server)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        yield engine, server, client, url


def images(n):
    base = Image.open(EXAMPLE_IMAGE).convert("RGB")
    return [base.rotate(90 * i) for i in range(n)]


def alone(engine, server, image, spec, max_tokens, text=PROMPT):
    policy = copy.deepcopy(parse_policy(spec))
    result, = engine.generate([image], [text], policy=policy, max_new_tokens=max_tokens)
    return result.text


def test_whole_and_streamed_answers_equal_generate(served):
    engine, server, client, _ = served
    image = images(1)[0]
    want = alone(engine, server, image, "dyrate", 12)
    reply = client.chat.completions.create(model="demo", messages=user(data_url(image)),
                                           max_tokens=12, temperature=0)
    assert reply.choices[0].message.content == want
    extra = reply.model_extra["dyrate"]
    assert extra["visual_tokens"] > 0 and 0 < extra["kept_visual_tokens"] <= extra["visual_tokens"]
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    stream = client.chat.completions.create(model="demo", messages=user(data_url(image)),
                                            max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_concurrent_requests_get_their_own_answers(served):
    engine, server, client, _ = served
    K = server.scheduler.prune_layer
    specs = ["dense", f"schedule:{K}:0.5", "dyrate", f"schedule:{K}:0,0.3,0.6"]
    base = images(4)
    cases = [(base[i % 4].resize((200 + 8 * i, 180 + 4 * i)), specs[i % 4], 3 + i % 7)
             for i in range(16)]  # 16 different images, lengths and policies

    def ask(case):
        image, spec, n = case
        reply = client.chat.completions.create(
            model="demo", messages=user(data_url(image)), max_tokens=n, temperature=0,
            extra_body={"dyrate_policy": spec})
        return reply.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, cases))
    for (image, spec, n), text in zip(cases, got):
        assert text == alone(engine, server, image, spec, n)


def test_a_stream_closed_early_frees_its_slot(served):
    _, server, client, _ = served
    stream = client.chat.completions.create(model="demo", messages=user(data_url(images(1)[0])),
                                            max_tokens=200, temperature=0, stream=True,
                                            extra_body={"dyrate_policy": "dense"})
    next(iter(stream))
    stream.close()
    deadline = time.time() + 20
    while server.scheduler.has_work and time.time() < deadline:
        time.sleep(0.05)
    assert not server.scheduler.has_work


def test_bad_inputs_get_a_4xx_and_the_server_keeps_serving(served):
    engine, server, client, url = served
    good = data_url(images(1)[0])
    bomb = data_url(Image.new("RGB", (1100, 1000)))  # over the test server's 1 Mi pixels
    not_image = "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode()
    bad = {
        "not JSON": b"{",
        "wrong type": {"messages": user(good), "max_tokens": "ten"},
        "no image": {"messages": [{"role": "user", "content": PROMPT}]},
        "three images": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": good}}] * 3}]},
        "invalid base64": {"messages": user("data:image/png;base64,@@@")},
        "not an image": {"messages": user(not_image)},
        "over the pixel limit": {"messages": user(bomb)},
        "beyond capacity": {"messages": user(good), "max_tokens": 100000},
        "unknown policy": {"messages": user(good), "dyrate_policy": "magic"},
        "another K": {"messages": user(good), "dyrate_policy": "fastv:1:0.5"},
        "remote URL": {"messages": user("https://example.com/cat.png")},
        "outside the allowed directory": {"messages": user("../../etc/passwd")},
        "bad role": {"messages": [{"role": "robot", "content": "hi"}]},
    }
    for name, body in bad.items():
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, reply = post(url, raw)
        assert 400 <= status < 500, (name, status, reply)
        assert reply["error"]["message"], name
    status, reply = post(url, json.dumps({"messages": user("example.png"), "max_tokens": 3,
                                          "temperature": 0}).encode())
    assert status == 200 and reply["choices"][0]["message"]["content"] is not None
    ok = client.chat.completions.create(model="demo", messages=user(good), max_tokens=3)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_models_health_and_metrics(served):
    _, server, client, url = served
    assert [m.id for m in client.models.list().data] == ["demo"]
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    for name in ("dyrate_requests_total", "dyrate_time_to_first_token_seconds_count",
                 "dyrate_queue_depth", "dyrate_slots_in_use", "dyrate_kept_visual_token_ratio",
                 "dyrate_flops_saved_ratio"):
        assert name in text


def test_the_command_serves_the_demo_on_a_fresh_port():
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dyrate_engine.cli", "serve", "--port",
                                str(port), "--max-batch", "2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    status = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.25)
        assert status == {"status": "ok"}, process.stderr.read() if process.poll() else ""
        reply = post(f"http://127.0.0.1:{port}", json.dumps(
            {"messages": user(data_url(images(1)[0])), "max_tokens": 2}).encode())
        assert reply[0] == 200 and reply[1]["dyrate"]["policy"].startswith("dyrate")
    finally:
        process.terminate()
        process.wait(30)


def test_bench_serve_loads_the_server_and_refuses_other_hosts(served, tmp_path, capsys):
    from dyrate_engine.cli import main

    _, server, _, url = served
    K = server.scheduler.prune_layer
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--url", url, "--requests", "6", "--concurrency", "3",
                 "--rate", "20", "--policies", "dense", f"schedule:{K}:0.75", "--max-tokens",
                 "2:6", "--json", str(out), "--plot", str(tmp_path / "serve.png")]) == 0
    assert (tmp_path / "serve.png").stat().st_size > 1000
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["dense", f"schedule:{K}:0.75"]
    for r in rows:
        assert r["errors"] == 0 and r["requests"] == 6 and r["requests_per_s"] > 0
        assert 0 < r["ttft_p50"] <= r["ttft_p99"] and r["output_tokens_per_s"] > 0
    assert "req/s" in capsys.readouterr().out
    assert main(["bench", "serve", "--url", "http://example.com:8000"]) == 2
    assert "this machine only" in capsys.readouterr().err
