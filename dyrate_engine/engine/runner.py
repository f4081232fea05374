"""Runs the decoder over the cache: prefill of one sequence, and a batched decode step split at
a layer so the engine can score and prune between the monitor layer and the pruned layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from ..models.llama import LlamaDecoder
from .cache import KVCache


def prefill_layers(dec: LlamaDecoder, cache: KVCache, b: int, h: torch.Tensor,
                   positions: torch.Tensor, layers: range, additions: dict | None = None,
                   last_row_only: bool = True):
    """Run ``layers`` on the prompt of sequence ``b`` (``h [1, T, d]`` at ``positions [1, T]``,
    or ``[3, 1, T]`` under M-RoPE; after prefill pruning the kept tokens' original positions),
    writing its cache from slot 0. ``additions`` ``{layer: (index [n], values [n, d])}`` are
    added to the hidden states at ``index`` after that layer (DeepStack). Returns the hidden
    states and the last layer's query. With ``last_row_only``, the model's last layer computes
    the keys and values of every token but the query and output of the last token only
    (``h [1, 1, d]``): nothing reads the other rows, and their queries, attention, output
    projection and MLP are about a twelfth of a 12-layer prefill."""
    q = None
    cos, sin = dec.rope(positions)
    for i in layers:
        layer = dec.layers[i]
        last = last_row_only and i == dec.n_layers - 1 and not (additions and i in additions)
        q, k, v = dec.qkv(layer, h, cos, sin, last_query_only=last)
        T = k.shape[2]
        cache.kv[i, 0, b, :, :T] = k[0]
        cache.kv[i, 1, b, :, :T] = v[0]
        mask = None
        if layer.sliding_window is not None:
            mask = _causal_mask(positions.reshape(-1, T)[0], layer.sliding_window)
        if last:  # the last query sees every key: no causal mask
            h = h[:, -1:]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None
                                                  else mask[-1:], enable_gqa=True)
        elif mask is None:
            attn = dec.causal_attention(q, k, v)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        h = dec.finish_layer(layer, h, attn)
        if additions and i in additions:
            index, values = additions[i]
            h = h.clone()
            h[0, index] += values.to(h.dtype)
    return h, q


def _causal_mask(pos: torch.Tensor, window: int) -> torch.Tensor:
    """Causal in token order (M-RoPE positions are not increasing over image tokens) within a
    sliding window of 1-D positions, as transformers does: a key is visible iff
    query_pos - key_pos < window."""
    order = torch.arange(len(pos), device=pos.device)
    return (order[None, :] <= order[:, None]) & (pos[:, None] - pos[None, :] < window)


def decode_layers(dec: LlamaDecoder, cache: KVCache, h: torch.Tensor, layers: range,
                  rope: tuple[torch.Tensor, torch.Tensor] | None = None):
    """One decode step of ``layers`` for the whole batch (``h [B, 1, d]``), each sequence's new
    token written at its group's length. The cache's host lengths bound the slots attention
    reads, so pruned layers read only their kept length; with the C++ ``decode_attention`` (the
    CPU) each row reads only its own length, through :func:`static_decode_layers`. ``rope``: the step's ``(cos, sin)``
    when the caller already has them (a step runs its layers in two calls). No host sync.
    Returns hidden states and the last layer's query ``[B, H, 1, hd]``."""
    cos, sin = rope if rope is not None else dec.rope(cache.positions[:, None])
    if _reads_own_lengths(h.device):  # each row over its own length: no host length, no mask
        h, q, _ = static_decode_layers(dec, cache, h, layers, (cos, sin), _attend_own_lengths)
        return h, q
    batch = torch.arange(h.shape[0], device=h.device)
    max_len = cache.max_lengths()
    masks = {}  # one mask per (group, window): the same for every layer that shares them
    q = None
    for i in layers:
        layer, g = dec.layers[i], cache.group(i)
        q, slot = _cache_new_token(dec, cache, i, h, (cos, sin), batch)
        n = max_len[g] + 1
        key = (g, layer.sliding_window)
        if key not in masks:
            slots = torch.arange(n, device=h.device)
            visible = slots[None, :] <= slot[:, None]
            if layer.sliding_window is not None:  # slot == position in the dense layers
                visible &= slot[:, None] - slots[None, :] < layer.sliding_window
            masks[key] = visible[:, None, None, :]
        attn = F.scaled_dot_product_attention(
            q, cache.kv[i, 0, :, :, :n], cache.kv[i, 1, :, :, :n], attn_mask=masks[key],
            enable_gqa=True)
        h = dec.finish_layer(layer, h, attn)
    return h, q


# Whether decode_attention has a kernel that reads only each sequence's keys on the CPU (the C++
# one): then it beats SDPA, whose mask makes every row read to the longest.
_CPU_READS_OWN_LENGTHS = ops.backends()["decode_attention"]["cpu"] == "extension"


def _reads_own_lengths(device: torch.device) -> bool:
    return device.type == "cpu" and _CPU_READS_OWN_LENGTHS


def _attend_own_lengths(q, k, v, lengths, window, monitor):
    return ops.decode_attention(q, k, v, lengths, window=window)


def static_decode_layers(dec: LlamaDecoder, cache: KVCache, h: torch.Tensor, layers: range,
                         rope, attend, monitor=None):
    """:func:`decode_layers` over fixed shapes: every layer attends over the cache's whole
    capacity and ``attend(q, k, v, lengths, window, monitor)`` reads only each sequence's device
    length (new token included), so nothing here depends on a host value. ``monitor``: the
    extra arguments of the monitor layer (the last of ``layers``), whose attention also returns
    ``attention_scores``' outputs. Returns hidden states, the last layer's query and the
    monitor's ``(vis_scores, type_mass)`` (None without ``monitor``)."""
    batch = torch.arange(h.shape[0], device=h.device)
    q, found = None, None
    for i in layers:
        layer = dec.layers[i]
        q, slot = _cache_new_token(dec, cache, i, h, rope, batch)
        at_monitor = monitor is not None and i == layers[-1]
        attn = attend(q[:, :, 0], cache.kv[i, 0], cache.kv[i, 1], slot + 1, layer.sliding_window,
                      monitor if at_monitor else None)
        if at_monitor:
            attn, found = attn[0], attn[1:]
        h = dec.finish_layer(layer, h, attn[:, :, None])
    return h, q, found


def _cache_new_token(dec: LlamaDecoder, cache: KVCache, i: int, h, rope, batch):
    """Layer ``i``'s projections of the newest tokens ``h [B, 1, d]``, whose key and value go
    into the cache at each sequence's length in the layer's group. Returns the query and that
    slot ``[B]``."""
    slot = cache.lengths[cache.group(i)]
    q, k, v = dec.qkv(dec.layers[i], h, *rope)
    cache.kv[i, 0, batch, :, slot] = k[:, :, 0]
    cache.kv[i, 1, batch, :, slot] = v[:, :, 0]
    return q, slot
