"""Where a dense engine decode step of the cpu preset goes at batch 8 and 16: the linears of one
layer, the LM head, one layer's decode SDPA, and the engine's median step; then each decoder
matmul shape at 8 and 16 rows in the layouts one could use and through ``dyrate.decode_linear``,
which the decoder uses (RESULTS.md, 2026-11-26).

    python -m python_bench.bench_step_parts
"""
import statistics

import torch
import torch.nn.functional as F

from dyrate_engine import Engine
from dyrate_engine.models.llama import linear
from python_bench.presets import PRESETS, build_model, make_prompts
from python_bench.timing import median_ms


def t(fn, n=20):
    return median_ms(fn, warmup=3, repeats=n, cold=False)[0]


def step_parts():
    p = PRESETS["cpu"]
    eng = Engine(build_model(p, "cpu", "float32", 0))
    eng.eos_token_ids = []
    dec = eng.decoder
    L = dec.layers[0]
    for B in (8, 16):
        x = torch.randn(B, 1, dec.config.hidden_size)
        mid = torch.randn(B, 1, L.down.shape[1])
        lin = t(lambda: [linear(x, L.qkv), linear(x, L.o), linear(mid, L.down),
                         linear(x, L.gate_up)])
        head = t(lambda: linear(x[:, 0], dec.lm_head))
        n = 620
        kv = torch.randn(2, B, dec.n_kv_heads, 680, dec.head_dim)
        q = torch.randn(B, dec.n_heads, 1, dec.head_dim)
        mask = torch.ones(B, 1, 1, n, dtype=torch.bool)
        sdpa = t(lambda: F.scaled_dot_product_attention(
            q, kv[0, :, :, :n], kv[1, :, :, :n], attn_mask=mask, enable_gqa=True))
        ids, pixels = make_prompts(p, B, 1)
        steps = []
        for _ in range(2):
            steps += eng.generate_ids(ids, pixels, max_new_tokens=12)[0].stats.step_ms[2:]
        print(f"B={B}: linears of one layer {lin:.2f} ms (x{dec.n_layers} = "
              f"{lin * dec.n_layers:.1f}), lm_head {head:.2f}, decode SDPA of one layer "
              f"{sdpa:.2f} (x{dec.n_layers} = {sdpa * dec.n_layers:.1f}); engine step median "
              f"{statistics.median(steps):.1f} ms", flush=True)


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


if __name__ == "__main__":
    torch.set_num_threads(2)
    step_parts()
    matmul_layouts()
