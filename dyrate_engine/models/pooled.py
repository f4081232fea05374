"""Spatial pooling before the LLM: the baseline that average-pools each image's patch grid to a
smaller grid, so that the text model sees fewer, spatially uniform visual tokens in every layer
from the prefill on. Wen et al. ("Token Pruning in Multimodal Large Language Models: Are We
Solving the Right Problem?", arXiv 2502.11501) found spatially uniform reduction a strong
baseline for attention-ranked pruning; the quality harness compares it with the policies at
equal FLOPs.

:class:`PooledGrid` wraps a loaded LLaVA-1.5 adapter (its weights and decoder are shared, not
copied): images make ``side * side`` tokens instead of ``grid * grid``, the prompt's image-token
runs shrink to match, and the vision tower's features are average-pooled to that grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import find_visual_spans
from .llava import LlavaModel


def pool_grid(features: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """``[grid * grid, d]`` row-major patch features average-pooled to ``[side * side, d]``
    (adaptive pooling: cells of ``grid / side`` patches, overlapping when it does not divide)."""
    d = features.shape[-1]
    image = features.reshape(grid, grid, d).permute(2, 0, 1)[None].float()
    pooled = F.adaptive_avg_pool2d(image, side)[0].permute(1, 2, 0).reshape(side * side, d)
    return pooled.to(features.dtype)


class PooledGrid(LlavaModel):
    """``model``'s view with every image pooled to ``side x side`` visual tokens."""

    def __init__(self, model: LlavaModel, side: int):
        if type(model) is not LlavaModel:
            raise ValueError(f"spatial pooling takes a LLaVA-1.5 model (one square patch grid "
                             f"per image), got a {model.family!r} model")
        # A view of the loaded model (its hf model, decoder and processor), not a second load.
        self.__dict__.update(model.__dict__)
        vision = self.config.vision_config
        self.grid = vision.image_size // vision.patch_size
        if self.tokens_per_image != self.grid * self.grid:
            raise ValueError("spatial pooling needs patch tokens only (the 'default' feature "
                             "select strategy), not a CLS token besides")
        if not isinstance(side, int) or not 1 <= side <= self.grid:
            raise ValueError(f"pooled grid side must be an integer in [1, {self.grid}], got "
                             f"{side!r}")
        self.side = side
        self.tokens_per_image = side * side

    def pooled_away(self, n_visual: int) -> int:
        """How many visual tokens pooling removed from a prompt that has ``n_visual`` now."""
        return n_visual // self.tokens_per_image * (self.grid * self.grid - self.tokens_per_image)

    def image_features(self, vision):
        return [pool_grid(f, self.grid, self.side) for f in super().image_features(vision)]

    def encode(self, images, prompts, videos=None):
        ids, vision = super().encode(images, prompts, videos)
        return [self.shorten(row) for row in ids], vision

    def encode_chat(self, conversation, images):
        ids, vision = super().encode_chat(conversation, images)
        return self.shorten(ids), vision

    def shorten(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` with every run of ``k`` images' tokens (``k * grid^2``) cut to ``k * side^2``."""
        keep = torch.ones(len(ids), dtype=torch.bool)
        full = self.grid * self.grid
        for span in find_visual_spans(ids, self.image_token_id):
            if span.length % full:
                raise ValueError(f"a run of {span.length} image tokens is not whole images of "
                                 f"{full} tokens")
            keep[span.start + span.length // full * self.tokens_per_image:
                 span.start + span.length] = False
        return ids[keep.to(ids.device)]
