"""Tensor parallelism on the CPU over gloo: N processes (tp_worker.py, started as torchrun would)
give the same greedy tokens and the same kept visual tokens per step as one process, for every
policy, on tiny LLaVA checkpoints with the Llama, Mistral and Qwen2 text models; each rank holds
1/N of the decoder's weights; a lost rank ends the others with a clear error."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dyrate_engine import Engine
from dyrate_engine.models.sharding import check_shardable
from tiny_models import build_tiny_llava
from tp_worker import answers, policies

WORKER = Path(__file__).with_name("tp_worker.py")
BACKBONES = {  # H = 4 query heads each
    "llama-gqa": dict(kind="llama", kv_heads=2),  # KV heads split at tp=2, replicated at 4
    "mistral-mqa": dict(kind="mistral", kv_heads=1),  # one KV head, replicated
    "qwen2-bias": dict(kind="qwen2", kv_heads=2),  # q/k/v biases split with their rows
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {name: str(build_tiny_llava(tmp_path_factory.mktemp(name), layers=4, **kw))
            for name, kw in BACKBONES.items()}


@pytest.fixture(scope="module")
def single_process(checkpoints):
    """Each case's results in this process (tp=1), as the workers report theirs."""
    results = {}
    for name, path in checkpoints.items():
        results.update(answers(name, Engine.from_pretrained(path)))
    return results


def launch(tmp_path, tp: int, checkpoints: dict, timeout_s=60.0, fail_at=None,
           wait_s=240) -> list[dict]:
    """Run ``tp`` worker processes; each one's report, in rank order."""
    spec = tmp_path / f"spec{tp}.json"
    spec.write_text(json.dumps({"tp": tp, "checkpoints": checkpoints, "timeout_s": timeout_s,
                                "fail_at": fail_at}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, outs = [], []
    for rank in range(tp):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(tp), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        outs.append(tmp_path / f"rank{rank}_of_{tp}.json")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec), str(outs[-1])],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=wait_s)[0].decode() for p in procs]
    reports = []
    for rank, (proc, out, log) in enumerate(zip(procs, outs, logs)):
        reports.append(json.loads(out.read_text()) if out.exists() else
                       {"returncode": proc.returncode, "log": log[-3000:]})
    return reports


def test_two_ranks_equal_one_process_for_every_policy(tmp_path, checkpoints, single_process):
    reports = launch(tmp_path, 2, checkpoints)
    for rank, report in enumerate(reports):
        assert "results" in report, f"rank {rank}: {report}"
        for case, expected in single_process.items():
            got = report["results"][case]
            if case.endswith("weight_bytes"):  # every split here is even: exactly half
                kv_replicated = case.startswith("mistral")
                assert got * 2 == expected if not kv_replicated else expected / 2 < got
            else:
                assert got == expected, f"rank {rank}, {case}"
    # DyRate pruned during decoding, differently per row: the equality covers the combined monitor.
    kept = [row_kept for _, row_kept in single_process["llama-gqa/dyrate"]]
    assert all(k[-1] < k[0] for k in kept) and len({tuple(k) for k in kept}) == len(kept)


def test_four_ranks_with_replicated_kv_heads_equal_one_process(tmp_path, checkpoints,
                                                               single_process):
    reports = launch(tmp_path, 4, {"llama-gqa": checkpoints["llama-gqa"]})
    for rank, report in enumerate(reports):
        assert "results" in report, f"rank {rank}: {report}"
        for policy_name in [*policies(4), "dyrate@static"]:
            case = f"llama-gqa/{policy_name}"
            assert report["results"][case] == single_process[case], f"rank {rank}, {case}"


def test_a_lost_rank_ends_the_others_with_a_clear_error(tmp_path, checkpoints):
    timeout_s = 30.0
    reports = launch(tmp_path, 2, {"llama-gqa": checkpoints["llama-gqa"]}, timeout_s=timeout_s,
                     fail_at=[40, "exit"], wait_s=120)
    assert reports[1]["returncode"] == 3, reports[1]  # died at its 40th all-reduce
    assert "another rank has failed or timed out" in reports[0]["error"], reports[0]
    assert "rank 0 of 2" in reports[0]["error"]
    assert reports[0]["seconds"] < timeout_s  # the broken connection, not the timeout


def test_a_stalled_rank_ends_the_others_at_the_timeout(tmp_path, checkpoints):
    timeout_s = 4.0
    reports = launch(tmp_path, 2, {"llama-gqa": checkpoints["llama-gqa"]}, timeout_s=timeout_s,
                     fail_at=[40, "stall", 2 * timeout_s], wait_s=120)
    assert "another rank has failed or timed out" in reports[0]["error"], reports[0]
    assert timeout_s <= reports[0]["seconds"] < timeout_s + 20


def test_tp_without_a_process_group_says_how_to_launch(checkpoints, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node 2"):
        Engine.from_pretrained(checkpoints["llama-gqa"], tp=2)
    with pytest.raises(ValueError, match="tp must be >= 1"):
        Engine.from_pretrained(checkpoints["llama-gqa"], tp=0)


def test_head_counts_that_do_not_split_are_named(checkpoints):
    dec = Engine.from_pretrained(checkpoints["llama-gqa"]).decoder  # 4 heads, 2 KV heads
    with pytest.raises(ValueError, match="the 4 attention heads do not divide by 3"):
        check_shardable(dec, 3)
    dec.n_kv_heads = 3
    with pytest.raises(ValueError, match="the 3 key/value heads neither divide by 2"):
        check_shardable(dec, 2)
    dec.n_kv_heads = 2
    check_shardable(dec, 4)  # replicated KV heads: allowed
    assert torch.equal(torch.tensor(dec.layers[0].up.shape), torch.tensor([96, 64]))


def test_torchrun_generate_on_the_demo_prints_the_single_process_answer(tmp_path, capsys):
    """The documented command, on the demo model (41-token vocabulary: the LM head's shards are
    padded) with its DyRate predictor; rank 0 prints, rank 1 does not."""
    from dyrate_engine.bundled import EXAMPLE_IMAGE
    args = ["-m", "dyrate_engine.cli", "generate", "--model", "demo", "--image",
            str(EXAMPLE_IMAGE), "--prompt", "describe the image", "--policy", "dyrate",
            "--max-new-tokens", "12"]
    from dyrate_engine.cli import main
    assert main(args[2:]) == 0
    single = capsys.readouterr().out.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(port), *args, "--tp", "2"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert single and run.stdout.splitlines().count(single) == 1
