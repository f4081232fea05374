"""Where a dense engine decode step of the cpu preset goes at batch 8 and 16: the linears of one
layer, the LM head, one layer's decode SDPA, and the engine's median step; then each decoder
matmul shape at 8 and 16 rows in the layouts one could use and through ``dyrate.decode_linear``,
which the decoder uses; last, the decode ratio that pruning can buy at batch 16: what
Schedule(K=3, 0.75) saves is attention time in layers >= K only, so dense step / (dense step -
saving) bounds its speedup (python_bench/RESULTS.md has the runs).

    python python_bench/bench_step_parts.py
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

from dyrate_engine.bench.presets import PRESETS, build_model, engine_for, make_prompts
from dyrate_engine.bench.timing import median_ms
from dyrate_engine.models.llama import linear
from dyrate_engine.policies import n_keep_for


def t(fn, n=20):
    return median_ms(fn, warmup=3, repeats=n, cold=False)[0]


def sdpa_ms(dec, B, n, kv):
    """One layer's decode SDPA over the first ``n`` slots of ``kv [2, B, Hkv, Cap, hd]``."""
    q = torch.randn(B, dec.n_heads, 1, dec.head_dim)
    mask = torch.ones(B, 1, 1, n, dtype=torch.bool)
    return t(lambda: F.scaled_dot_product_attention(
        q, kv[0, :, :, :n], kv[1, :, :, :n], attn_mask=mask, enable_gqa=True))


def engine_median_step(eng, preset, B):
    """The engine's median dense decode step over two calls of 12 tokens (first two skipped)."""
    ids, vision = make_prompts(preset, B, 1)
    steps = []
    for _ in range(2):
        steps += eng.generate_ids(ids, max_new_tokens=12, ignore_eos=True,
                                  **vision)[0].stats.step_ms[2:]
    return statistics.median(steps)


def step_parts():
    p = PRESETS["cpu"]
    eng = engine_for(p, build_model(p, "cpu", "float32", 0))
    dec = eng.decoder
    L = dec.layers[0]
    for B in (8, 16):
        x = torch.randn(B, 1, dec.config.hidden_size)
        mid = torch.randn(B, 1, L.down.shape[1])
        lin = t(lambda: [linear(x, L.qkv), linear(x, L.o), linear(mid, L.down),
                         linear(x, L.gate_up)])
        head = t(lambda: linear(x[:, 0], dec.lm_head))
        sdpa = sdpa_ms(dec, B, 620, torch.randn(2, B, dec.n_kv_heads, 680, dec.head_dim))
        step = engine_median_step(eng, p, B)
        print(f"B={B}: linears of one layer {lin:.2f} ms (x{dec.n_layers} = "
              f"{lin * dec.n_layers:.1f}), lm_head {head:.2f}, decode SDPA of one layer "
              f"{sdpa:.2f} (x{dec.n_layers} = {sdpa * dec.n_layers:.1f}); engine step median "
              f"{step:.1f} ms", flush=True)


def matmul_layouts():
    for (o, i) in [(2304, 768), (4096, 768), (768, 2048), (32000, 768)]:
        W = torch.randn(o, i)
        Wt = W.t().contiguous()
        for B in (8, 16):
            x = torch.randn(B, i)
            a = t(lambda: F.linear(x, W), 30)
            b = t(lambda: (W @ x.t()).t().contiguous(), 30)
            c = t(lambda: x @ Wt, 30)
            d = t(lambda: torch.ops.dyrate.decode_linear(x, W, None), 30)
            print(f"{o}x{i} rows={B}: F.linear {a:.3f} ms, W @ x^T {b:.3f}, x @ W^T(contiguous) "
                  f"{c:.3f}, dyrate.decode_linear {d:.3f}", flush=True)


def pruned_step_bound(B=16, K=3, n_dense=620, rate=0.75):
    """One layer's decode SDPA at the dense length and at the length Schedule(K, rate) leaves, a
    plain read of the same keys and values (the bandwidth floor of that SDPA), the engine's dense
    median step, and the speedup they imply: dense step / (dense step - (L - K) x saving)."""
    p = PRESETS["cpu"]
    eng = engine_for(p, build_model(p, "cpu", "float32", 0))
    dec = eng.decoder
    n_visual = (p.vision["image_size"] // p.vision["patch_size"]) ** 2
    n_kept = int(n_keep_for(torch.tensor([rate]), torch.tensor([n_visual])))
    n_pruned = n_dense - (n_visual - n_kept)
    kv = torch.randn(2, B, dec.n_kv_heads, n_dense + 60, dec.head_dim)
    sdpa, read = {}, {}
    for n in (n_dense, n_pruned):
        sdpa[n] = sdpa_ms(dec, B, n, kv)
        read[n] = t(lambda: (kv[0, :, :, :n].sum(), kv[1, :, :, :n].sum()))
    dense = engine_median_step(eng, p, B)
    pruned_layers = dec.n_layers - K
    for what, cost in (("decode SDPA", sdpa), ("plain read of the same KV", read)):
        saving = pruned_layers * (cost[n_dense] - cost[n_pruned])
        ratio = dense / (dense - saving)
        print(f"B={B}, {what}, one layer: {cost[n_dense]:.2f} ms at {n_dense} keys, "
              f"{cost[n_pruned]:.2f} at {n_pruned}; x{pruned_layers} pruned layers saves "
              f"{saving:.1f} ms of a {dense:.1f} ms dense step: about {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(2)
    step_parts()
    matmul_layouts()
    pruned_step_bound()
