"""One rank of a tensor-parallel run, as torchrun would start it (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT in the environment); test_tensor_parallel.py starts N of them.

    python tests/tp_worker.py SPEC.json OUT.json

SPEC: ``{"tp": N, "checkpoints": {name: path}, "timeout_s": s, "fail_at": [k, how, s]}``.
Runs every policy of :func:`policies` on every checkpoint and writes, per case, each sequence's
tokens and kept visual tokens per step, and the bytes of the decoder's weights this rank holds.
With ``fail_at``, rank 1 dies or stalls at its k-th all-reduce and the others record the error.
"""
import json
import os
import sys
import time

import torch

from dyrate_engine import DyRate, Engine, FastV, Schedule
from dyrate_engine.models.tensor_parallel import TensorParallelError
from dyrate_engine.predictor import RatePredictor
from tiny_models import random_prompts  # beside this file, so on the path of its script


def policies(n_heads: int) -> dict:
    """The policies each checkpoint runs, by name; the predictor's weights are seeded, so every
    process builds the same one."""
    torch.manual_seed(2)  # on llama-gqa: rates that differ between rows and rise over the answer
    predictor = RatePredictor(n_heads=n_heads, rates=(0.0, 0.25, 0.5, 0.75), step_scale=8.0)
    torch.nn.init.normal_(predictor.linear.weight, std=3.0)
    return {"dense": lambda: None, "fastv": lambda: FastV(prune_layer=2, ratio=0.5),
            "schedule": lambda: Schedule([0.25, 0.5, 0.75], prune_layer=2),
            "dyrate": lambda: DyRate(predictor, prune_layer=2)}


def decoder_weight_bytes(engine) -> int:
    """Bytes of the storages under the text decoder's layer weights and LM head on this rank
    (storages, not views: a shard that is a view of the whole tensor keeps all of it)."""
    storages = {w.untyped_storage().data_ptr(): w.untyped_storage().nbytes()
                for w in engine.decoder.linear_weights()}
    return sum(storages.values())


def answers(name: str, engine) -> dict:
    """Each policy's tokens and kept visual tokens per step on a ragged batch of 3, by case name
    (DyRate also on the static decode step, whose monitor is fused into the attention)."""
    results = {}
    ids, pixels = random_prompts(3, seed=4)
    made = policies(engine.decoder.config.num_attention_heads)
    runs = [(policy_name, engine) for policy_name in made]
    runs.append(("dyrate@static", Engine(engine.model, decode_step="static")))
    for case, runner in runs:
        out = runner.generate_ids(ids, pixels, policy=made[case.split("@")[0]](),
                                  max_new_tokens=10)
        results[f"{name}/{case}"] = [[r.token_ids, r.stats.kept_visual] for r in out]
    results[f"{name}/weight_bytes"] = decoder_weight_bytes(engine)
    return results


def run_cases(spec: dict) -> dict:
    results = {}
    for name, path in spec["checkpoints"].items():
        engine = Engine.from_pretrained(path, tp=spec["tp"], tp_timeout_s=spec["timeout_s"])
        results.update(answers(name, engine))
    return results


def fail_at(call: int, how: str, stall_s: float = 0.0) -> None:
    """Make this rank, at its ``call``-th all-reduce, exit without a word to the others
    (``"exit"``) or stop answering for ``stall_s`` seconds (``"stall"``)."""
    from dyrate_engine.models.tensor_parallel import TensorParallel
    original, calls = TensorParallel.all_reduce, [0]

    def all_reduce(self, x):
        calls[0] += 1
        if calls[0] == call and how == "exit":
            os._exit(3)
        if calls[0] == call:
            time.sleep(stall_s)
        return original(self, x)
    TensorParallel.all_reduce = all_reduce


def main(spec_file: str, out_file: str) -> None:
    spec = json.loads(open(spec_file).read())
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if spec.get("fail_at") and rank == 1:
        fail_at(*spec["fail_at"])
    start = time.monotonic()
    try:
        report = {"results": run_cases(spec)}
    except TensorParallelError as error:
        report = {"error": str(error), "seconds": time.monotonic() - start}
    with open(out_file, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
