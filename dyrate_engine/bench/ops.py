"""Microbenchmarks of the fused ops against their PyTorch reference compositions.

Shapes of LLaVA-1.5-7B (32 heads of dim 128, 576 visual tokens after a 35-token system prompt, a
700-slot cache, 29 pruned layers of 32). Each figure is the median of repeated runs after warm-up;
the reference runs in the same process on the same inputs, and a plain large copy gives the
bandwidth ceiling (bytes read + written per second). ``causal_attention`` is bound by its GEMMs,
not by memory: its row also gives GFLOP/s (the causal products) against an fp32 matmul's.

    dyrate bench ops --device cpu --batch 1,8 --json out/ops_cpu.json

``--shape tiny`` runs toy sizes (seconds; for tests and dry runs, not for figures).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import torch

from .. import ops
from ..ops.packed_linear import MKL_PACKING, PackedWeights
from .op_rows import measure_row
from .prefill_ops import (bench_causal_attention, bench_decoder_elementwise,
                          bench_prefill_linear)
from .report import machine_info, save_json
from .timing import copy_bandwidth_gbs, matmul_gflops

LLAVA_7B = dict(heads=32, kv_heads=32, head_dim=128, n_visual=576, vis_start=35, prompt_len=640,
                capacity=700, pruned_layers=29, hidden=4096, intermediate=11008)
SHAPES = {"llava-1.5-7b": LLAVA_7B,
          "tiny": dict(heads=4, kv_heads=2, head_dim=16, n_visual=36, vis_start=5, prompt_len=50,
                       capacity=60, pruned_layers=3, hidden=64, intermediate=176)}
COPY_BYTES = {"llava-1.5-7b": 1 << 30, "tiny": 256 << 20}  # the copy-bandwidth measure's buffer
# On CUDA the linears are F.linear (cuBLAS) and the decoder's elementwise ops its references.
CPU_ONLY = ("decode_linear", "packed_linear", "decoder_elementwise", "causal_attention",
            "prefill_linear")


def make_inputs(batch, dtype, device, seed=0, shape=LLAVA_7B):
    s = shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    full = torch.full((batch,), s["capacity"], dtype=torch.long)
    return dict(
        q=torch.randn(batch, s["heads"], s["head_dim"], generator=g).to(device, dtype),
        k_cache=torch.randn(batch, s["kv_heads"], s["capacity"], s["head_dim"], generator=g)
        .to(device, dtype),
        v_cache=torch.randn(batch, s["kv_heads"], s["capacity"], s["head_dim"], generator=g)
        .to(device, dtype),
        lengths=full.to(device),
        vis_start=torch.full((batch,), s["vis_start"], dtype=torch.long, device=device),
        vis_len=torch.full((batch,), s["n_visual"], dtype=torch.long, device=device),
        prompt_len=torch.full((batch,), s["prompt_len"], dtype=torch.long, device=device),
        scores=torch.rand(batch, s["n_visual"], generator=g).to(device),
        present=torch.ones(batch, s["n_visual"], dtype=torch.bool, device=device),
        n_keep=torch.full((batch,), s["n_visual"] // 2, dtype=torch.long, device=device),
        shape=s,
    )


def bench_attention_scores(x, args):
    a = (x["q"], x["k_cache"], x["lengths"], x["vis_start"], x["vis_len"], x["prompt_len"])
    n_visual = x["shape"]["n_visual"]
    fused = lambda: torch.ops.dyrate.attention_scores(*a, None, n_visual)  # noqa: E731
    reference = lambda: ops.attention_scores_reference(*a, None, n_visual)  # noqa: E731
    key_bytes = int(x["lengths"].sum()) * x["k_cache"].shape[1] * x["k_cache"].shape[3] \
        * x["k_cache"].element_size()
    return [measure_row("attention_scores", x["k_cache"], fused, reference, key_bytes, args)]


def bench_select_keep(x, args):
    a = (x["scores"], x["present"], x["n_keep"])
    fused = lambda: torch.ops.dyrate.select_keep(*a)  # noqa: E731
    reference = lambda: ops.select_keep_reference(*a)  # noqa: E731
    nbytes = x["scores"].numel() * (x["scores"].element_size() + 2)
    return [measure_row("select_keep", x["scores"], fused, reference, nbytes, args)]


def bench_compact_kv(x, args):
    s = x["shape"]
    B = x["q"].shape[0]
    kv = torch.empty(s["pruned_layers"], 2, B, s["kv_heads"], s["capacity"], s["head_dim"],
                     dtype=x["k_cache"].dtype, device=x["k_cache"].device)
    kv.view(-1)[:: 997] = 1.0  # contents do not matter to a copy; avoid a full random fill
    keep = ops.select_keep_reference(x["scores"], x["present"], x["n_keep"])
    state = {}

    def restore():  # the op is in place: every timed call starts from the same state
        state["lengths"] = x["lengths"].clone()
        state["present"] = x["present"].clone()

    def call(fn):
        return lambda: fn(kv, state["lengths"], x["vis_start"], state["present"], keep)

    # Bytes read + written by the slots that move (everything after the first dropped token).
    first_drop = (x["present"] & ~keep).float().argmax(1) + x["vis_start"]
    moved_slots = int((x["lengths"] - first_drop - (x["present"] & ~keep).sum(1)).sum())
    nbytes = 2 * moved_slots * s["pruned_layers"] * 2 * s["kv_heads"] * s["head_dim"] \
        * kv.element_size()
    row = measure_row("compact_kv_", kv, call(torch.ops.dyrate.compact_kv_),
                      call(ops.compact_kv_reference), nbytes, args, setup=restore)
    del kv
    return [row]


def bench_decode_linear(x, args):
    """A layer's fused gate/up projection (the widest weight) and its down projection (the longest
    rows: 11008 at 7B, so the input rows outgrow L2) against F.linear, the BLAS call that
    transformers makes; one row per sequence."""
    s, like = x["shape"], x["q"]
    g = torch.Generator(device="cpu").manual_seed(1)
    rows_out = []
    for n, k in ((2 * s["intermediate"], s["hidden"]), (s["hidden"], s["intermediate"])):
        weight = torch.randn(n, k, generator=g).to(like)
        rows = torch.randn(like.shape[0], k, generator=g).to(like)
        nbytes = (weight.numel() + rows.numel() + rows.shape[0] * n) * like.element_size()
        fused = lambda: torch.ops.dyrate.decode_linear(rows, weight, None)  # noqa: E731
        reference = lambda: ops.decode_linear_reference(rows, weight, None)  # noqa: E731
        rows_out.append(measure_row("decode_linear", weight, fused, reference, nbytes, args,
                                    batch=rows.shape[0]))
    return rows_out


def bench_decode_attention(x, args):
    """One decode query per sequence over every key of its row, against SDPA with a length
    mask (the reference); bytes are the keys and values read."""
    a = (x["q"], x["k_cache"], x["v_cache"], x["lengths"])
    fused = lambda: torch.ops.dyrate.decode_attention(*a, None, None)  # noqa: E731
    reference = lambda: ops.decode_attention_reference(*a)  # noqa: E731
    k = x["k_cache"]
    nbytes = 2 * int(x["lengths"].sum()) * k.shape[1] * k.shape[3] * k.element_size()
    return [measure_row("decode_attention", k, fused, reference, nbytes, args)]


def bench_packed_linear(x, args):
    """decode_linear's two matrices through MKL-packed copies for the batch's row count against
    F.linear (fp32 only: MKL packs sgemm)."""
    if x["q"].dtype != torch.float32 or not MKL_PACKING:
        return []
    s, batch = x["shape"], x["q"].shape[0]
    g = torch.Generator(device="cpu").manual_seed(1)
    rows_out = []
    for n, k in ((2 * s["intermediate"], s["hidden"]), (s["hidden"], s["intermediate"])):
        weight, rows = torch.randn(n, k, generator=g), torch.randn(batch, k, generator=g)
        packed = PackedWeights()
        packed.pack([weight], batch)
        nbytes = (weight.numel() + rows.numel() + batch * n) * 4
        fused = lambda: packed.linear(rows, weight, None, None)  # noqa: E731
        reference = lambda: ops.decode_linear_reference(rows, weight, None)  # noqa: E731
        rows_out.append(measure_row("packed_linear", weight, fused, reference, nbytes, args,
                                    batch=batch))
    return rows_out


def add_arguments(parser):
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", nargs="+", default=None,
                        help="batch sizes, e.g. 1,8 or 1 8 (default: 1 8 on CPU, 1 8 32 64 on CUDA)")
    parser.add_argument("--shape", default="llava-1.5-7b", choices=list(SHAPES))
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--ops", nargs="+", default=None,
                        help="default: all; decode_linear, packed_linear, decoder_elementwise, "
                             "causal_attention and prefill_linear only on CPU (on CUDA they are "
                             "PyTorch's ops)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows and the machine to this file")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args):
    device = torch.device(args.device)
    batches = [int(b) for v in args.batch for b in str(v).split(",") if b] if args.batch \
        else ([1, 8] if device.type == "cpu" else [1, 8, 32, 64])
    shape = SHAPES[args.shape]
    if args.threads:
        torch.set_num_threads(args.threads)
    copy_before = copy_bandwidth_gbs(device, COPY_BYTES[args.shape])
    machine = machine_info(device)
    benches = {"attention_scores": bench_attention_scores, "select_keep": bench_select_keep,
               "compact_kv_": bench_compact_kv, "decode_linear": bench_decode_linear,
               "decode_attention": bench_decode_attention, "packed_linear": bench_packed_linear,
               "decoder_elementwise": bench_decoder_elementwise,
               "causal_attention": bench_causal_attention, "prefill_linear": bench_prefill_linear}
    names = args.ops or [n for n in benches
                         if device.type == "cpu" or n not in CPU_ONLY]
    rows = []
    for dtype in args.dtype:
        for batch in batches:
            x = make_inputs(batch, getattr(torch, dtype), device, shape=shape)
            for name in names:
                rows.extend(benches[name](x, args))
                print(f"  measured {name} {dtype} batch {batch}", file=sys.stderr, flush=True)
    # The ceiling is the better of a copy measured before and after the ops: this machine's
    # bandwidth drifts with its neighbours, and the best sustained copy is the honest ceiling.
    copy_bw = max(copy_before, copy_bandwidth_gbs(device, COPY_BYTES[args.shape]))
    for r in rows:
        r.of_copy_bw = r.gbs / copy_bw
    gemm = matmul_gflops(device) if any(r.gflops for r in rows) else None
    print(f"# {machine.get('gpu') or machine['cpu']}, {machine['threads']} threads, torch "
          f"{machine['torch']}, kernels: {machine['kernels']}, shape {args.shape}, commit "
          f"{machine['commit']}, {machine['date']}; copy bandwidth {copy_bw:.1f} GB/s (read + write)"
          + (f"; fp32 matmul {gemm:.0f} GFLOP/s" if gemm else ""))
    print(f"{'op':<17}{'dtype':<10}{'batch':>5}  {'ms':>9} {'±':>7} {'ref ms':>9} {'speedup':>8}"
          f" {'GB/s':>7} {'of copy':>8}  shape")
    for r in rows:
        print(f"{r.op:<17}{r.dtype:<10}{r.batch:>5}  {r.ms:9.3f} {r.spread_ms:7.3f} "
              f"{r.reference_ms:9.3f} {r.speedup:7.2f}x {r.gbs:7.1f} {r.of_copy_bw:7.0%}  {r.shape}"
              + (f"  {r.gflops:.0f} GFLOP/s, {r.gflops / gemm:.0%} of the matmul" if r.gflops
                 else ""))
    if args.json:
        save_json({"suite": "ops", "machine": machine, "copy_bandwidth_gbs": copy_bw,
                   "matmul_gflops": gemm,
                   "shape_name": args.shape, "shape": shape, "rows": [asdict(r) for r in rows]},
                  args.json)
    return rows


if __name__ == "__main__":
    main()
