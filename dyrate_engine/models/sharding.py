"""Cuts the text decoder's weights into one rank's shard for tensor parallelism
(``tensor_parallel.py``): q/k/v and gate/up by output rows (column-parallel), o and down by input
columns (row-parallel), the LM head by vocabulary rows (Megatron-LM, arXiv 1909.08053, Sec. 3).

Key/value heads are split like the query heads when their count divides by the ranks; when the
ranks are a multiple of it (GQA with few KV heads, e.g. Mistral's 8 over 16 ranks, or 1 over 2),
each rank keeps the one KV head its query heads read, replicated on the ranks that share it, as
vLLM does. Any other count is a ValueError.
"""
from __future__ import annotations

import math

import torch

from .llama import LayerWeights, LlamaDecoder
from .tensor_parallel import TensorParallel


def check_shardable(dec: LlamaDecoder, world: int) -> None:
    """A ValueError naming the count unless the decoder splits over ``world`` ranks."""
    H, Hkv = dec.n_heads, dec.n_kv_heads
    intermediate = dec.layers[0].up.shape[0] if dec.layers else 0
    if H % world:
        raise ValueError(f"tp={world}: the {H} attention heads do not divide by {world}")
    if Hkv % world and world % Hkv:
        raise ValueError(f"tp={world}: the {Hkv} key/value heads neither divide by {world} nor "
                         f"divide it (then each rank would keep one, replicated)")
    if intermediate % world:
        raise ValueError(f"tp={world}: the MLP's {intermediate} channels do not divide by {world}")


def shard_decoder(dec: LlamaDecoder, parallel: TensorParallel) -> None:
    """Replace ``dec``'s weights by rank ``parallel.rank``'s shard, in place: afterwards its
    ``n_heads`` / ``n_kv_heads`` are this rank's and its layers all-reduce (``dec.parallel``)."""
    rank, world, hd = parallel.rank, parallel.world, dec.head_dim
    check_shardable(dec, world)
    heads = dec.n_heads // world
    kv_heads = max(dec.n_kv_heads // world, 1)
    kv_first = rank * dec.n_kv_heads // world  # the KV head of this rank's first query head
    rows = (slice(rank * heads * hd, (rank + 1) * heads * hd),
            slice(kv_first * hd, (kv_first + kv_heads) * hd))
    dec.layers = [_shard_layer(layer, rows, rank, world) for layer in dec.layers]
    dec.vocab_size = dec.lm_head.shape[0]
    dec.lm_head = _vocab_rows(dec.lm_head, rank, world)
    dec.n_heads, dec.n_kv_heads = heads, kv_heads
    dec.parallel = parallel


def _shard_layer(layer: LayerWeights, rows, rank: int, world: int) -> LayerWeights:
    q_rows, kv_rows = rows
    sizes = [layer.q.shape[0], layer.k.shape[0], layer.v.shape[0]]
    qkv, qkv_bias, (q, k, v) = _take_rows(layer.qkv, layer.qkv_bias, sizes,
                                          [q_rows, kv_rows, kv_rows])
    channels = layer.up.shape[0] // world
    mine = slice(rank * channels, (rank + 1) * channels)
    gate_up, gate_up_bias, (_, up) = _take_rows(layer.gate_up, layer.gate_up_bias,
                                                [layer.up.shape[0]] * 2, [mine, mine])
    # A row-parallel linear's bias is added once, by rank 0, before the all-reduce sums it.
    first = rank == 0
    return LayerWeights(
        qkv=qkv, qkv_bias=qkv_bias, gate_up=gate_up, gate_up_bias=gate_up_bias,
        input_norm=layer.input_norm, q=q, k=k, v=v, o=layer.o[:, q_rows].contiguous(),
        post_norm=layer.post_norm, up=up, down=layer.down[:, mine].contiguous(),
        o_bias=layer.o_bias if first else None, down_bias=layer.down_bias if first else None,
        sliding_window=layer.sliding_window, q_norm=layer.q_norm, k_norm=layer.k_norm)


def _take_rows(fused: torch.Tensor, bias, sizes: list[int], picks: list[slice]):
    """The picked rows of each part of a fused matrix (parts of ``sizes`` rows, stacked), as one
    new fused matrix, its bias, and a view of each part."""
    weight = torch.cat([part[pick] for part, pick in zip(fused.split(sizes), picks)])
    if bias is not None:
        bias = torch.cat([part[pick] for part, pick in zip(bias.split(sizes), picks)])
    views, start = [], 0
    for pick in picks:
        n = pick.stop - pick.start
        views.append(weight[start:start + n])
        start += n
    return weight, bias, views


def _vocab_rows(lm_head: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s ``ceil(V / world)`` rows of the LM head, the last rank's padded with
    zeros so the gathered logits are equal slices; the padding is cut after the gather."""
    per_rank = math.ceil(lm_head.shape[0] / world)
    rows = lm_head[rank * per_rank:(rank + 1) * per_rank]
    if rows.shape[0] == per_rank:
        return rows.contiguous()
    padded = rows.new_zeros(per_rank, rows.shape[1])
    padded[:rows.shape[0]] = rows
    return padded


def shard_model(model, parallel: TensorParallel) -> None:
    """Shard ``model``'s (a VisionLanguageModel's) text decoder for ``parallel`` and release the
    unsharded text weights the transformers model held; its vision tower stays whole. The
    transformers text model is then empty: the engine runs the text through the decoder."""
    dec = model.decoder
    tied = dec.lm_head.data_ptr() == dec.embed_tokens.data_ptr()
    shard_decoder(dec, parallel)
    empty = torch.empty(0, dtype=dec.dtype, device=dec.device)
    for layer in model.hf.model.language_model.layers:
        for param in layer.parameters():
            param.data = empty
    if not tied:
        model.hf.lm_head.weight.data = empty
