"""FastV's published prefill-FLOPs formula next to the engine's exact count, at LLaVA-1.5-7B shape.

FastV (arXiv 2403.06764, Sec. 4): reduction = 1 - [K F(n) + (T - K) F(n')] / [T F(n)] with
F(n) = 4 n d^2 + 2 n^2 d + 2 n d m, T layers, n tokens, n' = n - R * (visual tokens). The engine's
count (dyrate_engine.models.flops) is exact: every matmul at 2 FLOPs per multiply-add, causal
attention, the SwiGLU MLP's three matrices. Built on the meta device: shapes only, no weights.

    python python_bench/fastv_flops.py --prune-layer 2 --ratio 0.5
"""
from __future__ import annotations

import argparse

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from ..deprecation import DeprecatedFlag
from ..models import flops
from ..models.llama import LlamaDecoder
from ..policies import n_keep_for


def llava_7b_decoder() -> LlamaDecoder:
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-5)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text))
    return LlamaDecoder(text, model.model.language_model, model.lm_head.weight)


def fastv_formula(n, n_pruned, d, m, layers, K):
    F = lambda t: 4 * t * d * d + 2 * t * t * d + 2 * t * d * m  # noqa: E731
    return 1 - (K * F(n) + (layers - K) * F(n_pruned)) / (layers * F(n))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune-layer", type=int, default=2, help="K: layers >= K are pruned")
    parser.add_argument("--layer", dest="prune_layer", type=int, action=DeprecatedFlag,
                        help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=float, default=0.5, help="R: share of visual tokens dropped")
    parser.add_argument("--system", type=int, default=35, help="tokens before the image")
    parser.add_argument("--visual", type=int, default=576)
    parser.add_argument("--instruction", type=int, default=40, help="tokens after the image")
    args = parser.parse_args(argv)
    dec = llava_7b_decoder()
    n = args.system + args.visual + args.instruction
    kept_visual = int(n_keep_for(torch.tensor(args.ratio), torch.tensor(args.visual)))
    n_pruned = n - (args.visual - kept_visual)
    L, K = dec.n_layers, args.prune_layer
    exact = 1 - flops.prefill_flops(dec, [n] * K + [n_pruned] * (L - K)) / \
        flops.prefill_flops(dec, [n] * L)
    d, m = dec.layers[0].q.shape[1], dec.layers[0].up.shape[0]
    published = fastv_formula(n, n_pruned, d, m, L, K)
    print(f"LLaVA-1.5-7B shape, {n} prompt tokens ({args.visual} visual), FastV K={K} R={args.ratio:g}")
    print(f"  engine exact prefill FLOPs reduction: {exact:.1%}")
    print(f"  FastV formula:                        {published:.1%}")
    print(f"  difference: {abs(exact - published) * 100:.1f} points")
    return exact, published


if __name__ == "__main__":
    main()
