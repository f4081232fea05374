"""The differentiable masking forward of the VLM under teacher forcing (DyRate, arXiv 2501.14204,
Sec. 3.3): the whole prompt + answer in one pass, with every answer position's own pruning choice.

Row ``t`` of the batch plays the role of the engine's decode step ``s = t - (P - 1)`` (``P`` the
prompt length; step 0 is the prefill's last prompt token). Its monitor-layer attention (layer K-1)
gives the predictor's features and the visual-token ranking; each candidate rate gives a keep mask
(the top-``n_keep`` visual tokens of that row); the Gumbel-Softmax sample ``y_t`` mixes the K
masked attentions of row ``t`` in every layer >= K (``_attention`` says why the masked softmaxes
are mixed rather than one mixed mask applied). With hard (straight-through) samples the forward
pass equals the engine's physical pruning at that step; gradients reach the predictor through the
soft sample. Prompt rows before ``P - 1`` use step 0's masks, as the engine's prefill pruning does
(tests/test_predictor_training.py checks both).

The rows are independent: training is not monotone, while the engine is (a rate below the current
one keeps the current set), so at inference the applied rate is the running maximum of the
predicted ones. That prunes at least as much as trained, which the λ term already pays for.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.base import VisionLanguageModel
from ..models.llama import LlamaDecoder
from ..ops.attention_scores import IMAGE
from ..policies.base import n_keep_for
from .examples import TeacherBatch


def embed(model: VisionLanguageModel, batch: TeacherBatch) -> torch.Tensor:
    """Prompt + answer embeddings ``[B, T, d]`` with the visual features spliced in."""
    with torch.no_grad():
        features = model.visual_features(batch.vision, batch.layouts)
        return model.embed(batch.input_ids, features, batch.layouts)


def deepstack(model: VisionLanguageModel, batch: TeacherBatch, layers: range) -> dict:
    """The features the model adds after each of ``layers`` at the visual tokens (Qwen3-VL's
    DeepStack): ``{layer: [sum of n_visual, d]}``, rows in the order of ``batch.vis_slots``;
    empty when none of ``layers`` takes any (the vision tower does not run then). The masking
    forward adds them at every visual token: a dropped token's are never read, since no kept
    row attends to it, where the engine drops the token and its features together."""
    wanted = [i for i in layers if i < model.deepstack_layers]
    if not wanted:
        return {}
    with torch.no_grad():
        stack = model.deepstack_features(batch.vision, batch.layouts)
    return {i: torch.cat([own[i] for own in stack]) for i in wanted}


def _add_deepstack(h, batch: TeacherBatch, values: torch.Tensor) -> torch.Tensor:
    slots, real = batch.vis_slots
    rows = torch.arange(slots.shape[0], device=slots.device)[:, None].expand_as(slots)[real]
    return h.index_put((rows, slots[real]), values.to(h.dtype), accumulate=True)


def visual_ranks(batch: TeacherBatch, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(is_visual, rank)`` ``[B, T]``: whether each slot holds a visual token, and its rank
    among the row's visual tokens (0 for the others)."""
    slots, real = batch.vis_slots
    B = slots.shape[0]
    rows = torch.arange(B, device=slots.device)[:, None].expand_as(slots)[real]
    is_visual = torch.zeros(B, T, dtype=torch.bool, device=slots.device)
    is_visual[rows, slots[real]] = True
    rank = torch.zeros(B, T, dtype=torch.long, device=slots.device)
    rank[rows, slots[real]] = torch.arange(slots.shape[1], device=slots.device).expand_as(slots)[real]
    return is_visual, rank


def token_types(batch: TeacherBatch, T: int) -> torch.Tensor:
    """Type of each key slot ``[B, T]``: 0 system, 1 image, 2 instruction (the text between
    visual runs too), 3 response."""
    slot = torch.arange(T, device=batch.input_ids.device)[None]
    types = torch.where(slot < batch.vis_start[:, None], 0,
                        torch.where(slot < batch.prompt_len[:, None], 2, 3))
    return torch.where(visual_ranks(batch, T)[0], IMAGE, types)


def _attention(q, k, v, keep=None, visual_index=None):
    """Causal attention with explicit probabilities ``[B, H, T, T]`` (fp32).

    With ``keep = (keep_rows [B, T, R, Nv] bool, weights [B, T, R])``: each candidate ``r``'s
    keep set masks the visual keys of every query row (a masked softmax, stable in log space),
    and the row's attention is the ``weights``-mix of the R masked attentions. With one-hot
    weights that is exactly the pruned attention; the gradient of a weight is the difference
    the candidate's attention makes, a bounded quantity. (Multiplying the probabilities by a
    mixed 0/1 mask instead has a derivative of p_j / (kept mass) at the hard point, which
    explodes on rows whose attention sat on dropped tokens.)"""
    B, H, T, hd = q.shape
    groups = H // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(hd)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if keep is None:
        probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return probs, probs.to(v.dtype) @ v
    keep_rows, weights = keep
    is_vis, index = visual_index
    # A query always sees itself: that changes only rows of dropped visual tokens, which no kept
    # row reads (the engine does not compute them at all), and keeps every row non-empty.
    maskable = is_vis[:, None, :] & ~torch.eye(T, dtype=torch.bool, device=q.device)
    probs = 0.0
    for r in range(keep_rows.shape[2]):
        kept = keep_rows[:, :, r].gather(2, index[:, None, :].expand(B, T, T))  # [B, Tq, Tk]
        allowed = causal & (kept | ~maskable)
        masked = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
        probs = probs + weights[:, None, :, r, None] * masked
    return probs, probs.to(v.dtype) @ v


def monitor_pass(dec: LlamaDecoder, h, batch: TeacherBatch, K: int, additions=None):
    """Layers < K (frozen, no grad), ``additions`` (``deepstack``) added after their layers.
    Returns the hidden states after layer K-1, each row's
    per-head mass on the four token types ``[B, T, H, 4]`` and head-mean visual scores
    ``[B, T, max n_visual]`` at the monitor layer K-1 (what ``ops.attention_scores`` gives the engine)."""
    B, T, _ = h.shape
    cos, sin = dec.rope(batch.positions)
    with torch.no_grad():
        for i in range(K):
            layer = dec.layers[i]
            q, k, v = dec.qkv(layer, h, cos, sin)
            if i < K - 1:
                attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                probs, attn = _attention(q, k, v)
            h = dec.finish_layer(layer, h, attn)
            if additions and i in additions:
                h = _add_deepstack(h, batch, additions[i])
        one_hot = F.one_hot(token_types(batch, T), 4).float()  # [B, Tk, 4]
        type_mass = torch.einsum("bhqk,bkc->bqhc", probs, one_hot)
        slots, real = batch.vis_slots  # [B, Nv]
        slots = slots.clamp(max=T - 1)
        head_mean = probs.mean(1)  # [B, Tq, Tk]
        vis_scores = head_mean.gather(2, slots[:, None, :].expand(B, T, slots.shape[1]))
        vis_scores = vis_scores * real[:, None, :]
    return h, type_mass, vis_scores


def keep_masks(vis_scores: torch.Tensor, n_visual: torch.Tensor, rates) -> torch.Tensor:
    """``[B, T, R, Nv]`` bool: for each row and candidate rate, the top-``n_keep`` visual tokens
    by that row's scores, ties to the lower index (``ops.select_keep``'s order)."""
    B, T, Nv = vis_scores.shape
    valid = torch.arange(Nv, device=vis_scores.device) < n_visual[:, None]  # [B, Nv]
    scores = vis_scores.masked_fill(~valid[:, None, :], float("-inf"))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(Nv, device=order.device)
                                            .expand_as(order))
    n_keep = n_keep_for(torch.as_tensor(rates, device=vis_scores.device)[None, :],
                        n_visual[:, None])  # [B, R]
    return rank[:, :, None, :] < n_keep[:, None, :, None]


def step_rows(batch: TeacherBatch, T: int) -> torch.Tensor:
    """The decision row of each query row ``[B, T]``: ``max(t, P - 1)`` (prompt rows use step 0)."""
    t = torch.arange(T, device=batch.input_ids.device)[None]
    return torch.maximum(t, batch.prompt_len[:, None] - 1)


def pruned_pass(dec: LlamaDecoder, h, batch: TeacherBatch, K: int, keep_rows: torch.Tensor,
                weights: torch.Tensor, additions=None):
    """Layers >= K where query row ``t`` attends through the ``weights [B, T, R]``-mix of the
    candidates' keep sets ``keep_rows [B, T, R, Nv]`` (differentiable in ``weights``), with
    ``additions`` (``deepstack``) added after their layers. Returns the logits ``[B, T, V]``."""
    B, T, _ = h.shape
    cos, sin = dec.rope(batch.positions)
    is_vis, index = visual_ranks(batch, T)
    keep = (keep_rows.bool(), weights.float())
    for i in range(K, dec.n_layers):
        layer = dec.layers[i]
        q, k, v = dec.qkv(layer, h, cos, sin)
        _, attn = _attention(q, k, v, keep, (is_vis, index))
        h = dec.finish_layer(layer, h, attn.to(h.dtype))
        if additions and i in additions:
            h = _add_deepstack(h, batch, additions[i])
    return dec.logits(h)


def answer_rows(batch: TeacherBatch, T: int) -> torch.Tensor:
    """bool ``[B, T]``: the rows that predict an answer token (step ``t - (P - 1)``)."""
    t = torch.arange(T, device=batch.input_ids.device)[None]
    start = batch.prompt_len[:, None] - 1
    return (t >= start) & (t < start + batch.answer_len[:, None])

