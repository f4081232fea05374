"""A deliberately plain reference for pruning: keep every token in every layer's cache and mask
the keys of dropped visual tokens in layers >= K from the step they are dropped on. One sequence
at a time, growing caches with torch.cat, the PyTorch reference ops; shares with the engine only
the decoder's per-layer maths (tested against transformers separately)."""
import math

import torch
import torch.nn.functional as F

from dyrate_engine import ops
from dyrate_engine.models.vision import VisionInputs
from dyrate_engine.policies.base import MonitorStats


def masked_generate(engine, ids, pixels, policy, max_new_tokens, batch_size, b, features=None,
                    rope=None, deepstack=None):
    """Greedy tokens and fp32 logits of sequence ``b`` of a batch of ``batch_size``;
    ``pixels`` are this sequence's images, ``[3, H, W]`` or ``[k, 3, H, W]``, or ``features``
    its visual tokens ``[n_visual, d]`` from the model's vision tower. ``rope``: the prompt's
    positions as the model gives them and its next position (M-RoPE); default one per token.
    ``deepstack``: features added at the visual tokens after the first layers, one per layer."""
    dec = engine.decoder
    K, L = policy.prune_layer, dec.n_layers
    if features is None:
        pixels = pixels[None] if pixels.dim() == 3 else pixels
        features = torch.cat(engine.model.image_features(VisionInputs({"pixel_values": pixels})))
    ids = ids.clone()
    media = [t for t in (engine.model.image_token_id, engine.model.video_token_id) if t is not None]
    vis = torch.isin(ids, torch.tensor(media)).nonzero()[:, 0]  # every image's and video's slots
    vis_start, n_vis, prompt_len = int(vis[0]), len(vis), len(ids)
    h = dec.embed_tokens[ids].clone()
    h[vis] = features
    keys = [None] * L
    values = [None] * L
    dropped = torch.zeros(prompt_len + max_new_tokens, dtype=torch.bool)
    present = torch.ones(1, n_vis, dtype=torch.bool)
    n_kept = n_vis
    tokens, all_logits = [], []
    positions, next_position = rope if rope is not None else (torch.arange(prompt_len)[None],
                                                              prompt_len)
    h = h[None]
    for step in range(max_new_tokens):
        adds = {i: (vis, f) for i, f in enumerate(deepstack or [])} if step == 0 else {}
        h, q = _layers(dec, h, positions, range(K), keys, values, dropped, K, adds)
        if step == 0 or policy.monitors_decode:
            n_keys = keys[K - 1].shape[2]
            scores, mass = ops.attention_scores_reference(
                q[:, :, -1], keys[K - 1], torch.tensor([n_keys]), torch.tensor([vis_start]),
                torch.tensor([n_vis]), torch.tensor([prompt_len]), None, n_vis, vis[None])
            stats = MonitorStats(step, None, None, torch.full((batch_size,), n_vis), None)
            rate = float(policy.rates(stats)[b])
            wanted = min(math.ceil((1 - rate) * n_vis - 1e-9), n_kept)
            if wanted < n_kept:
                own = MonitorStats(step, scores, mass, torch.tensor([n_vis]), torch.tensor([n_kept]))
                keep = ops.select_keep_reference(policy.ranking(own), present,
                                                 torch.tensor([wanted]))
                newly = present & ~keep
                dropped[vis[newly[0]]] = True
                present, n_kept = keep, wanted
        h, _ = _layers(dec, h, positions, range(K, L), keys, values, dropped, K, adds)
        logits = dec.logits(h[:, -1])[0]
        token = int(logits.argmax())
        tokens.append(token)
        all_logits.append(logits)
        if token in engine.model.eos_token_ids:
            break
        h = dec.embed_tokens[torch.tensor([[token]])]
        positions = torch.tensor([[next_position + step]])
    return tokens, torch.stack(all_logits)


def _layers(dec, h, positions, layers, keys, values, dropped, K, adds):
    q = None
    for i in layers:
        layer = dec.layers[i]
        cos, sin = dec.rope(positions)
        q, k, v = dec.qkv(layer, h, cos, sin)
        keys[i] = k if keys[i] is None else torch.cat([keys[i], k], 2)
        values[i] = v if values[i] is None else torch.cat([values[i], v], 2)
        key_pos = torch.arange(keys[i].shape[2])  # every token stays: slot = token index
        query_pos = key_pos[-h.shape[1]:]
        allowed = key_pos[None, :] <= query_pos[:, None]
        if i >= K:
            allowed &= ~dropped[key_pos][None, :]
        attn = F.scaled_dot_product_attention(q, keys[i], values[i], attn_mask=allowed,
                                              enable_gqa=True)
        h = dec.finish_layer(layer, h, attn)
        if i in adds:  # every visual token gets it: a dropped one's keys are masked anyway
            index, feature = adds[i]
            h = h.clone()
            h[0, index] += feature.to(h.dtype)
    return h, q


def assert_pruning_equals_masked_reference(engine, ids, vision, make_policy, max_new_tokens):
    """The engine's batched run of ``make_policy()`` on the processor's ``ids`` and ``vision``
    equals, per sequence, tokens and logits (1e-4), :func:`masked_generate` on that sequence's
    own visual features, positions and DeepStack features; and it pruned."""
    results = engine.generate_ids(ids, policy=make_policy(), max_new_tokens=max_new_tokens,
                                  output_logits=True, **vision.tensors)
    model = engine.model
    layouts = model.visual_layouts(ids, vision)
    features = model.visual_features(vision, layouts)
    rope = model.positions(ids, layouts, vision)
    stack = model.deepstack_features(vision, layouts)
    for b, r in enumerate(results):
        tokens, logits = masked_generate(engine, ids[b], None, make_policy(), max_new_tokens,
                                         len(ids), b, features=features[b], rope=rope[b],
                                         deepstack=stack[b] if stack else None)
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)
        assert r.stats.kept_visual[-1] < r.stats.n_visual
