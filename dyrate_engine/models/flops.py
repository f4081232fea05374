"""Exact analytical FLOPs of the text decoder: every matmul (2 FLOPs per multiply-add), attention with
the real number of keys each layer reads. Elementwise work (norms, RoPE, softmax) is not counted,
as in FastV's formula and torch's FlopCounterMode. The prefill count is the model's (every token in
every layer): the engine's prefill skips the last layer's query, attention output and MLP for every
token but the last (nothing reads them), so it runs a little less than counted, the same for every
policy."""
from __future__ import annotations

from .llama import LlamaDecoder


def linear_flops_per_token(dec: LlamaDecoder) -> int:
    """Projections and MLP of one layer for one token."""
    d = dec.layers[0].q.shape[1]
    q_out, kv_out, ff = dec.layers[0].q.shape[0], dec.layers[0].k.shape[0], dec.layers[0].up.shape[0]
    return 2 * d * (q_out + 2 * kv_out) + 2 * q_out * d + 2 * 3 * d * ff


def attention_flops(dec: LlamaDecoder, n_keys: int) -> int:
    """Scores and weighted values of one query over ``n_keys`` keys in one layer."""
    return 2 * 2 * dec.n_heads * dec.head_dim * n_keys


def lm_head_flops(dec: LlamaDecoder) -> int:
    return 2 * dec.lm_head.shape[0] * dec.lm_head.shape[1]


def prefill_flops(dec: LlamaDecoder, n_tokens_per_layer: list[int]) -> int:
    """Causal prefill where layer ``l`` runs on ``n_tokens_per_layer[l]`` tokens (fewer in pruned
    layers); query ``i`` of a layer reads ``i + 1`` keys; logits for the last token only."""
    per_token = linear_flops_per_token(dec)
    return sum(n * per_token + attention_flops(dec, n * (n + 1) // 2)
               for n in n_tokens_per_layer) + lm_head_flops(dec)


def kv_read_tokens(n_layers: int, prune_layer: int, dense_keys: int, kept_keys: int) -> int:
    """Keys (and as many values) one decode step reads over every layer, counted in tokens:
    ``dense_keys`` in each layer before ``prune_layer``, ``kept_keys`` in each from it on."""
    return prune_layer * dense_keys + (n_layers - prune_layer) * kept_keys


def decode_flops(dec: LlamaDecoder, keys_per_layer: list[int]) -> int:
    """One decode token; layer ``l`` attends over ``keys_per_layer[l]`` keys (its own included)."""
    per_token = linear_flops_per_token(dec)
    return sum(per_token + attention_flops(dec, n) for n in keys_per_layer) + lm_head_flops(dec)
