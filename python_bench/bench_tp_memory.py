"""Tensor parallelism on the CPU (gloo): what each rank holds and its peak memory, at tp = 1, 2, 4.

A LLaVA preset's random-weight model is saved as a checkpoint; for each tp, that many processes
(started as torchrun would) load it with ``Engine.from_pretrained(..., tp=N)`` and answer one
prompt. Each rank reports the bytes of the decoder's sharded weights (layers and LM head) and of
the replicated ones (embedding, vision tower, projector) it holds, the peak of its anonymous
resident memory while loading above what it had before (the page cache of the memory-mapped
files aside), and the median decode step; the step time on a 2-core
machine shows the collectives' cost, not a speed-up.

    python python_bench/bench_tp_memory.py --preset cpu --tp 1,2,4
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading

MIB = 2**20


class AnonymousPeak:
    """The peak of this process's anonymous resident memory (RssAnon: what it allocated, not
    the page cache of the memory-mapped weight files) while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.peak, self._done = anonymous_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, anonymous_bytes())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous_bytes())


def anonymous_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages under ``tensors`` (views share their matrix's)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def rank_main(checkpoint: str, tp: int, new_tokens: int) -> None:
    import torch

    from dyrate_engine.bench.presets import PRESETS, make_prompts
    from dyrate_engine.engine import Engine

    torch.set_num_threads(max(1, 2 // tp))
    before = anonymous_bytes()
    with AnonymousPeak() as peak:
        engine = Engine.from_pretrained(checkpoint, tp=tp)
    peak = peak.peak
    dec = engine.decoder
    sharded = storage_bytes(dec.linear_weights())
    held = storage_bytes([*engine.model.hf.parameters(), *dec.linear_weights()])
    ids, vision = make_prompts(PRESETS[os.environ["BENCH_PRESET"]], 1, 1)
    out = engine.generate_ids(ids, max_new_tokens=new_tokens, **vision)[0]
    print(json.dumps({"tp": tp, "rank": int(os.environ.get("RANK", 0)), "sharded": sharded,
                      "replicated": held - sharded, "peak_load": max(peak - before, 0),
                      "step_ms": statistics.median(out.stats.step_ms[2:]),
                      "tokens": out.token_ids}))


def launch(script: str, checkpoint: str, preset: str, tp: int, new_tokens: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(tp):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(tp), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), BENCH_PRESET=preset)
        procs.append(subprocess.Popen(
            [sys.executable, script, "--rank-of", checkpoint, "--tp", str(tp),
             "--new-tokens", str(new_tokens)], env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=1800)
        if proc.returncode:
            raise SystemExit(f"a rank of tp={tp} failed (exit {proc.returncode})")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports


def held(report: dict) -> int:
    return report["sharded"] + report["replicated"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--tp", default="1,2,4")
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--rank-of", help=argparse.SUPPRESS)  # a rank's process: the checkpoint
    args = parser.parse_args()
    if args.rank_of:
        return rank_main(args.rank_of, int(args.tp), args.new_tokens)
    from dyrate_engine.bench.checkpoint import save_preset
    from dyrate_engine.bench.presets import PRESETS

    with tempfile.TemporaryDirectory() as checkpoint:
        save_preset(PRESETS[args.preset], checkpoint)
        print(f"preset {args.preset}; MiB per rank: sharded weights held, replicated weights "
              f"held, both, peak anonymous memory growth while loading (at tp=1 transformers "
              f"leaves some weights memory-mapped, outside it); median decode step (batch 1)")
        single = None
        for tp in (int(t) for t in args.tp.split(",")):
            reports = launch(os.path.abspath(__file__), checkpoint, args.preset, tp,
                             args.new_tokens)
            single = single or reports[0]
            for r in reports:
                same = "same tokens as tp=1" if r["tokens"] == single["tokens"] else "DIFFERENT"
                print(f"tp={tp} rank {r['rank']}: sharded {r['sharded'] / MIB:7.1f} "
                      f"({r['sharded'] / single['sharded']:.3f} of tp=1)  replicated "
                      f"{r['replicated'] / MIB:6.1f}  held {held(r) / MIB:7.1f}  peak load "
                      f"{r['peak_load'] / MIB:7.1f}  step {r['step_ms']:6.1f} ms  {same}")


if __name__ == "__main__":
    main()
