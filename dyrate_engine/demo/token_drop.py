"""Visual-token dropout that mirrors the engine's prefill pruning, for training the demo VLM.

A model trained only densely has no reason to gather what a caption needs into the visual tokens
that its monitor layer attends to most, so pruning hurts it far more than it would hurt a large
pretrained VLM (FastV, arXiv 2403.06764, and DyRate, arXiv 2501.14204, rely on that redundancy).
Training with the pruning itself in the loop teaches both halves: layers >= K learn to caption
from the kept tokens, and layers < K learn to put the information where the ranking looks.

During ``model(**batch)`` inside ``with VisualTokenDrop(...)``: at layer K-1, each row's last
prompt token's head-mean attention ranks its visual tokens (ties to the lower index, as
``ops.select_keep``); each row draws a rate from ``rates``; layers >= K then see only the top
``n_keep_for(rate)`` visual tokens, for every query, as the engine's prefill pruning leaves them.
"""
from __future__ import annotations

import math

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from ..models.layout import VisualLayout, find_visual_spans, slot_table
from ..train.masked_forward import keep_masks

IGNORE = -100  # the label of prompt and padding positions (transformers' ignore_index)


class VisualTokenDrop:
    """Hooks a HF ``LlavaForConditionalGeneration``; ``set_batch`` before each forward."""

    def __init__(self, model, prune_layer: int, rates, image_token_id: int, generator=None):
        self.layers = model.model.language_model.layers
        if not 1 <= prune_layer < len(self.layers):
            raise ValueError(f"prune layer must be in [1, {len(self.layers) - 1}], got "
                             f"{prune_layer}")
        self.prune_layer, self.image_token_id = prune_layer, image_token_id
        self.rates = torch.tensor([float(r) for r in rates])
        if not len(self.rates) or (self.rates < 0).any() or (self.rates >= 1).any():
            raise ValueError(f"drop rates must be in [0, 1), got {list(rates)}")
        self.generator = generator
        self.batch = self.mask = None
        self.handles = []

    def __enter__(self):
        self.handles.append(self.layers[self.prune_layer - 1].register_forward_pre_hook(
            self._rank, with_kwargs=True))
        for layer in self.layers[self.prune_layer:]:
            self.handles.append(layer.register_forward_pre_hook(self._apply, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def set_batch(self, input_ids, labels, attention_mask):
        """Right-padded training batch: the prompt ends where the labels start."""
        B = input_ids.shape[0]
        has_label = labels != IGNORE
        if not has_label.any(1).all():
            raise ValueError("every row needs answer labels")
        # Each run of image tokens counts as one image here; only the slots matter.
        layouts = [VisualLayout(spans, len(spans))
                   for spans in (find_visual_spans(row, self.image_token_id) for row in input_ids)]
        slots, real = slot_table(layouts, input_ids.device)
        pick = torch.randint(len(self.rates), (B,), generator=self.generator)
        self.batch = dict(vis_slots=slots, real=real, n_visual=real.sum(1),
                          last_prompt=has_label.float().argmax(1) - 1,
                          valid=attention_mask.bool(), pick=pick, rate=self.rates[pick])

    @torch.no_grad()
    def _rank(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        attn = module.self_attn
        x = module.input_layernorm(hidden)
        B, T, _ = x.shape
        hd = attn.head_dim
        q = attn.q_proj(x).view(B, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(B, T, -1, hd).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        rows = self.batch["last_prompt"]
        q_last = q[torch.arange(B), :, rows]  # [B, H, hd]
        scores = torch.einsum("bhd,bhtd->bht", q_last.float(), k.float()) / math.sqrt(hd)
        slots = torch.arange(T, device=x.device)
        scores = scores.masked_fill((slots[None] > rows[:, None])[:, None], float("-inf"))
        head_mean = scores.softmax(-1).mean(1)  # [B, T]
        # The training code's ranking (ops.select_keep's order), for every candidate rate; each
        # row then takes its drawn one.
        n_visual, real = self.batch["n_visual"], self.batch["real"]
        slots = self.batch["vis_slots"].clamp(max=T - 1)  # [B, Nv]
        keep = keep_masks(head_mean.gather(1, slots)[:, None], n_visual, self.rates.tolist())
        keep = keep[torch.arange(B), 0, self.batch["pick"]]  # [B, Nv]
        dropped = torch.zeros(B, T, dtype=torch.bool, device=x.device).scatter_(
            1, slots, ~keep & real)  # [B, T] key slots
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        # A dropped token still sees itself so that its (unused) row is never empty.
        allowed = causal[None] & self.batch["valid"][:, None, :] & ~dropped[:, None, :]
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=x.device)
        # Additive, so that SDPA and eager attention read it the same way.
        self.mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=x.device).masked_fill(
            ~allowed, torch.finfo(hidden.dtype).min)[:, None]
        return None

    def _apply(self, module, args, kwargs):
        kwargs["attention_mask"] = self.mask
        return args, kwargs
