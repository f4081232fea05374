"""What a benchmark run leaves: the machine, a table on stdout, JSON and PNG plots."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys

import torch

from .. import ops

# Measured per call, reported as median / min / max over the repeats.
TIMED = ["prefill_ms", "step_ms", "tokens_per_s", "e2e_tokens_per_s", "wall_ms", "peak_mem_mb",
         "of_floor"]


def machine_info(device) -> dict:
    """Where and with what a figure was measured."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device = torch.device(device)
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu,
                cpus=os.cpu_count(), threads=torch.get_num_threads(), python=platform.python_version(),
                torch=torch.__version__, transformers=transformers.__version__, commit=commit,
                kernels=ops.backends()["compact_kv_"][device.type], cpu_isa=ops.cpu_isa(),
                command=" ".join(["dyrate"] + sys.argv[1:]) if sys.argv else "")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    return info


def save_json(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def _m(row, name, fmt, width):
    v = row["metrics"][name]
    return f"{format(v['median'], fmt):>{width}} {format(v['max'] - v['min'], fmt):>{width - 2}}"


def print_table(result: dict, file=sys.stdout) -> None:
    m = result["machine"]
    where = m.get("gpu") or m["cpu"]
    bw = result.get("copy_bandwidth_measures_gbs") or [result["copy_bandwidth_gbs"]]
    print(f"# {where}, {m['threads']} threads, torch {m['torch']}, transformers "
          f"{m['transformers']}, kernels: {m['kernels']} ({m.get('cpu_isa', '?')}), commit "
          f"{m['commit']}, {m['date']}",
          file=file)
    print(f"# preset {result['preset']}: {result['shape']}; {result['dtype']} on "
          f"{result['device']}; N = {result['new_tokens']} new tokens; median of "
          f"{result['repeats']} rounds (going round the batches) after {result['warmup']} warm-up "
          f"round(s), ± = max - min; copy "
          f"bandwidth {result['copy_bandwidth_gbs']:.1f} GB/s [{min(bw):.1f}, {max(bw):.1f}] "
          f"(measured each round; a round's floor uses its own), read "
          f"{result['read_bandwidth_gbs']:.1f} GB/s", file=file)
    head = (f"{'batch':>5} {'policy':<22} {'prefill ms':>10} {'±':>8} {'step ms':>9} {'±':>7} "
            f"{'tok/s':>9} {'±':>7} {'vs dense':>8} {'vs HF':>6} {'e2e tok/s':>9} {'peak MB':>8} "
            f"{'KV MB':>7} {'KV fin':>7} {'kept':>6} {'FLOPs':>6} {'floor':>6}")
    print(head, file=file)
    for r in result["rows"]:
        ratio = lambda k: f"{r[k]['median']:.2f}x" if k in r else "-"  # noqa: E731
        kept = r["kept_visual_by_step"][-1] if r["kept_visual_by_step"] else result["n_visual"]
        print(f"{r['batch']:>5} {r['label']:<22} {_m(r, 'prefill_ms', '.1f', 10)} "
              f"{_m(r, 'step_ms', '.2f', 9)} {_m(r, 'tokens_per_s', '.1f', 9)} "
              f"{ratio('vs_dense'):>8} {ratio('vs_hf'):>6} "
              f"{r['metrics']['e2e_tokens_per_s']['median']:9.1f} "
              f"{r['metrics']['peak_mem_mb']['median']:8.0f} {r['kv_allocated_bytes'] / 2**20:7.1f} "
              f"{r['kv_final_bytes'] / 2**20:7.1f} {kept:6.0f} {r['flops_vs_dense']:6.1%} "
              f"{r['metrics']['of_floor']['median']:6.1%}", file=file)
    print("# decode tokens/s ratios, paired by round: median [min, max] of the per-round ratios:",
          file=file)
    for r in result["rows"]:
        ratios = [f"vs {base} {r[k]['median']:.2f}x [{r[k]['min']:.2f}, {r[k]['max']:.2f}]"
                  for base in ("dense", "hf") if (k := f"vs_{base}") in r]
        if ratios:
            print(f"#   batch {r['batch']:>3} {r['label']:<22} {', '.join(ratios)}", file=file)
    for note in dict.fromkeys(f"{r['label']}: {r['note']}" for r in result["rows"] if r["note"]):
        print(f"# {note}", file=file)


def plot(result: dict, out_dir: str, log=print) -> list[str]:
    """tokens/s vs batch per contender; per-step latency and kept visual tokens vs step at the
    largest batch. Skipped with a message when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("# plots skipped: matplotlib is not installed (pip install 'dyrate_engine[bench]')")
        return []
    stem = os.path.join(out_dir, f"e2e_{result['preset']}")
    title = f"{result['preset']}: {result['machine'].get('gpu') or result['machine']['cpu']}"
    labels = list(dict.fromkeys(r["label"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        rows = [r for r in result["rows"] if r["label"] == label]
        y = [r["metrics"]["tokens_per_s"] for r in rows]
        ax.errorbar([r["batch"] for r in rows], [v["median"] for v in y], marker="o", capsize=3,
                    yerr=[[v["median"] - v["min"] for v in y], [v["max"] - v["median"] for v in y]],
                    label=label)
    if len(result["batches"]) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(result["batches"], [str(b) for b in result["batches"]])
    ax.set(xlabel="batch size", ylabel="decode tokens/s (median, min-max bars)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = [f"{stem}_tokens_per_s.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    batch = max(result["batches"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for r in (r for r in result["rows"] if r["batch"] == batch):
        steps = range(1, len(r["step_ms_by_step"]) + 1)
        top.plot(steps, r["step_ms_by_step"], marker=".", label=r["label"])
        kept = r["kept_visual_by_step"][1:] or [result["n_visual"]] * len(steps)
        bottom.plot(steps, kept, marker=".", label=r["label"])
    top.set(ylabel="decode step ms (median over repeats)", title=f"{title}, batch {batch}")
    bottom.set(xlabel="decode step", ylabel="visual tokens kept (batch mean)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    fig.tight_layout()
    paths.append(f"{stem}_steps.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
