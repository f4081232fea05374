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

from .llama import LlamaDecoder, sliding_windows
from .sharded_weights import ShardPlan, read_text_layers
from .tensor_parallel import TensorParallel


def check_shardable(dec: LlamaDecoder, world: int) -> None:
    """A ValueError naming the count unless the decoder splits over ``world`` ranks."""
    H, Hkv = dec.n_heads, dec.n_kv_heads
    intermediate = dec.intermediate_size
    if H % world:
        raise ValueError(f"tp={world}: the {H} attention heads do not divide by {world}")
    if Hkv % world and world % Hkv:
        raise ValueError(f"tp={world}: the {Hkv} key/value heads neither divide by {world} nor "
                         f"divide it (then each rank would keep one, replicated)")
    if intermediate % world:
        raise ValueError(f"tp={world}: the MLP's {intermediate} channels do not divide by {world}")


def plan_shard(dec: LlamaDecoder, parallel: TensorParallel) -> ShardPlan:
    """Which heads, KV heads and MLP channels rank ``parallel.rank`` keeps."""
    rank, world, hd = parallel.rank, parallel.world, dec.head_dim
    check_shardable(dec, world)
    heads = dec.n_heads // world
    kv_heads = max(dec.n_kv_heads // world, 1)
    kv_first = rank * dec.n_kv_heads // world  # the KV head of this rank's first query head
    channels = dec.intermediate_size // world
    return ShardPlan(rank, slice(rank * heads * hd, (rank + 1) * heads * hd),
                     slice(kv_first * hd, (kv_first + kv_heads) * hd),
                     slice(rank * channels, (rank + 1) * channels))


def shard_model(model, path, parallel: TensorParallel) -> None:
    """Give ``model`` (a VisionLanguageModel loaded without its text layers, ``text_layers=
    False``) rank ``parallel.rank``'s shard of the text decoder, its layers read from the
    checkpoint in ``path``: afterwards its decoder's ``n_heads`` / ``n_kv_heads`` are this
    rank's and its layers all-reduce (``decoder.parallel``)."""
    dec = model.decoder
    plan = plan_shard(dec, parallel)
    dec.layers = read_text_layers(path, dec.n_layers, plan, sliding_windows(dec.config),
                                  dec.dtype, dec.device)
    tied = dec.lm_head.data_ptr() == dec.embed_tokens.data_ptr()
    dec.lm_head = _vocab_rows(dec.lm_head, parallel.rank, parallel.world)
    if not tied:  # the whole LM head is no longer needed; a tied one is the embedding
        model.hf.lm_head.weight.data = torch.empty(0, dtype=dec.dtype, device=dec.device)
    dec.n_heads //= parallel.world
    dec.n_kv_heads = max(dec.n_kv_heads // parallel.world, 1)
    dec.parallel = parallel


def _vocab_rows(lm_head: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s ``ceil(V / world)`` rows of the LM head, the last rank's padded with
    zeros so the gathered logits are equal slices; the padding is cut after the gather."""
    per_rank = math.ceil(lm_head.shape[0] / world)
    rows = lm_head[rank * per_rank:(rank + 1) * per_rank]
    if rows.shape[0] == per_rank:
        return rows.clone()  # not a view: the whole head's storage would stay alive
    padded = rows.new_zeros(per_rank, rows.shape[1])
    padded[:rows.shape[0]] = rows
    return padded

