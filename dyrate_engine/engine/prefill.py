"""The prefill of a batch: the vision tower once, then each prompt's own causal pass (a prompt
computes exactly what it computes alone), with the policy's first pruning between the layer
groups (docs/DESIGN.md, data flow)."""
from __future__ import annotations

import torch

from ..models.base import VisionLanguageModel
from .cache import KVCache
from .pruning import PruningState
from .runner import prefill_layers


def prefill(model: VisionLanguageModel, cache: KVCache, sequences, vision,
            pruning: PruningState | None) -> torch.Tensor:
    """Layers < K run for every prompt; with a pruning policy, the policy sees the last prompt
    token's attention at layer K-1, and layers >= K run on the kept tokens only (original
    positions kept), writing their cache compact. Returns the last prompt tokens' logits
    ``[B, V]``; the cache's lengths and host mirror are set."""
    dec, K = model.decoder, cache.prune_layer
    layouts = [seq.layout for seq in sequences]
    features = model.visual_features(vision, layouts)
    stack = model.deepstack_features(vision, layouts)
    rope = model.positions([seq.prompt_ids for seq in sequences], layouts, vision)
    hidden, positions, queries = [], [], []
    for seq, (pos, next_position) in zip(sequences, rope):
        ids = seq.prompt_ids.to(model.device)[None]
        h = model.embed(ids, [features[seq.index]], [seq.layout])
        slots = torch.tensor(seq.layout.slots(), device=model.device)
        adds = _additions(stack, seq.index, slots, range(K))
        h, q = prefill_layers(dec, cache, seq.index, h, pos, range(K), adds)
        hidden.append(h)
        positions.append(pos)
        queries.append(q[0, :, -1])
        cache.start(seq.index, seq.prompt_len, next_position)
    kept = None
    if pruning is not None:
        kept = _prune_prompts(cache, sequences, pruning, hidden, positions, torch.stack(queries))
    logits = []
    for seq, h, pos in zip(sequences, hidden, positions):
        slots, keep = torch.tensor(seq.layout.slots(), device=model.device), None
        if kept is not None:  # the kept visual tokens' places among the kept tokens
            token_kept, keep = kept[seq.index]
            slots = (torch.cumsum(token_kept.long(), 0) - 1)[slots[keep]]
        adds = _additions(stack, seq.index, slots, range(K, dec.n_layers), keep)
        h, _ = prefill_layers(dec, cache, seq.index, h, pos, range(K, dec.n_layers), adds)
        logits.append(dec.logits(h[:, -1]))
    return torch.cat(logits)


def _additions(stack, b: int, index: torch.Tensor, layers: range, keep=None) -> dict | None:
    """DeepStack: ``{layer: (index, values)}`` of request ``b`` for ``layers``, the values of
    the kept visual tokens only (``keep``) once pruning dropped some."""
    if stack is None:
        return None
    return {i: (index, values if keep is None else values[keep])
            for i, values in enumerate(stack[b]) if i in layers}


def _prune_prompts(cache: KVCache, sequences, pruning: PruningState, hidden, positions, queries):
    """The policy's verdict at step 0; the dropped visual tokens leave ``hidden`` and
    ``positions`` (in place), so layers >= K never compute them. Returns, per request, the
    kept tokens ``[T]`` and the kept visual tokens ``[n_visual]``, or None if nothing drops."""
    K = cache.prune_layer
    found = pruning.monitor(0, queries, cache.kv[K - 1, 0], cache.lengths[0])
    selection = pruning.select(found)
    if selection is None:
        return None
    lengths, kept = [], []
    for seq in sequences:
        b, n = seq.index, seq.layout.n_visual
        token_kept = torch.ones(hidden[b].shape[1], dtype=torch.bool, device=hidden[b].device)
        token_kept[seq.layout.slots()] = selection.keep[b, :n]
        hidden[b], positions[b] = hidden[b][:, token_kept], positions[b][..., token_kept]
        lengths.append(seq.prompt_len - (n - selection.counts[b]))
        kept.append((token_kept, selection.keep[b, :n]))
    pruning.keep_at_prefill(selection)
    cache.set_pruned_lengths(lengths)
    return kept
