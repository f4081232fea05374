"""``dyrate bench ops`` rows of the CPU prefill's ops: its elementwise kernels, its causal
attention and its oneDNN-packed linears, at ``batch`` prompts of the shape's ``prompt_len``
tokens. The compute-bound ones also give GFLOP/s."""
from __future__ import annotations

import torch

from .. import ops
from ..ops.prefill_linear import DECODE_ROWS, ONEDNN_PACKING, PrefillWeights
from .op_rows import measure_row


def bench_decoder_elementwise(x, args):
    """RMSNorm (after the residual add), SiLU-gate and RoPE of a prefill: ``batch`` prompts of
    ``prompt_len`` tokens, against the PyTorch compositions; bytes are read plus written."""
    s, like, B = x["shape"], x["q"], x["q"].shape[0]
    T, d, f, heads, hd = s["prompt_len"], s["hidden"], s["intermediate"], s["heads"], s["head_dim"]
    g = torch.Generator(device="cpu").manual_seed(2)
    h, o, w = (torch.randn(*shape, generator=g).to(like) for shape in ((B, T, d), (B, T, d), (d,)))
    gate_up = torch.randn(B, T, 2 * f, generator=g).to(like)
    qkv = torch.randn(B, T, 3 * heads * hd, generator=g).to(like)
    q = qkv[..., :heads * hd].unflatten(-1, (heads, hd))
    cos, sin = (torch.rand(B, T, hd, generator=g).to(like) for _ in range(2))
    size = like.element_size()
    cases = [("add_rms_norm", h, (o, h, w, 1e-5), 4 * h.numel()),
             ("silu_mul", gate_up, (gate_up,), 3 * gate_up.numel() // 2),
             ("rope", q, (q, cos, sin), 2 * q.numel() + 2 * cos.numel())]
    rows_out = []
    for name, t, call_args, elements in cases:
        fused = lambda: getattr(torch.ops.dyrate, name)(*call_args)  # noqa: E731
        reference = lambda: getattr(ops, f"{name}_reference")(*call_args)  # noqa: E731
        rows_out.append(measure_row(name, t, fused, reference, elements * size, args, batch=B))
    return rows_out


def bench_causal_attention(x, args):
    """A prefill's causal self-attention: ``batch`` prompts of ``prompt_len`` tokens, against
    SDPA's causal path (what the decoder ran before the kernel); bytes are q, k, v and the
    output once, FLOPs the products the mask leaves."""
    s, like, B = x["shape"], x["q"], x["q"].shape[0]
    T, H, Hkv, D = s["prompt_len"], s["heads"], s["kv_heads"], s["head_dim"]
    g = torch.Generator(device="cpu").manual_seed(3)
    q = torch.randn(B, H, T, D, generator=g).to(like)
    k, v = (torch.randn(B, Hkv, T, D, generator=g).to(like) for _ in range(2))
    fused = lambda: torch.ops.dyrate.causal_attention(q, k, v, None)  # noqa: E731
    reference = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
        q, k, v, is_causal=True, enable_gqa=True)
    row = measure_row("causal_attention", q, fused, reference,
                      (2 * q.numel() + 2 * k.numel()) * like.element_size(), args)
    row.gflops = 4 * B * H * D * (T * (T + 1) // 2) / (row.ms * 1e-3) / 1e9
    return [row]


def bench_prefill_linear(x, args):
    """The MLP's two matrices times a prefill's ``batch * prompt_len`` rows, through their
    oneDNN-packed copies, against F.linear (fp32 only, and more rows than a decode step's);
    FLOPs are the product's."""
    s, batch = x["shape"], x["q"].shape[0]
    rows = batch * s["prompt_len"]
    if x["q"].dtype != torch.float32 or not ONEDNN_PACKING or rows <= DECODE_ROWS:
        return []
    g = torch.Generator(device="cpu").manual_seed(4)
    rows_out = []
    for n, k in ((2 * s["intermediate"], s["hidden"]), (s["hidden"], s["intermediate"])):
        weight, inputs = torch.randn(n, k, generator=g), torch.randn(rows, k, generator=g)
        packed = PrefillWeights()
        packed.pack([weight])
        fused = lambda: packed.linear(inputs, weight, None, None)  # noqa: E731
        reference = lambda: torch.nn.functional.linear(inputs, weight)  # noqa: E731
        row = measure_row("prefill_linear", weight, fused, reference,
                          (weight.numel() + inputs.numel() + rows * n) * 4, args, batch=batch)
        row.gflops = 2 * rows * n * k / (row.ms * 1e-3) / 1e9
        rows_out.append(row)
    return rows_out
