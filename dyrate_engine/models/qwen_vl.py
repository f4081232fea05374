"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) and Qwen2.5-VL
(``Qwen2_5_VLForConditionalGeneration``): dynamic resolution and M-RoPE.

The processor cuts an image into 14 px patches at (nearly) its own resolution, so an image makes
``t * h * w / merge**2`` visual tokens by its patch grid (``image_grid_thw``), each image between
a vision-start and a vision-end token. The vision tower (window attention in 2.5) runs through
transformers. The text model is Qwen2 layers with M-RoPE: text tokens step one position on all
three axes, an image's tokens take (time, row, column) positions from its grid, and the text after
an image resumes at the image's start plus ``max(h, w) / merge``. The positions come from the
transformers model's own ``get_rope_index``, per prompt; decoding then continues one past the
prompt's largest position. Pruned tokens keep their three positions.
"""
from __future__ import annotations

import torch

from .base import VisionLanguageModel
from .vision import VisionInputs

TEXT, IMAGE, VIDEO = 0, 1, 2  # transformers' mm_token_type_ids


class Qwen2VLModel(VisionLanguageModel):
    family = "qwen2_vl"
    hf_class = "Qwen2VLForConditionalGeneration"
    vision_keys = ("pixel_values", "image_grid_thw")

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        super().__init__(hf_model, processor, max_seq_len=max_seq_len)
        vision = self.config.vision_config
        self.merge = vision.spatial_merge_size
        self.patch_width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2

    def check_vision(self, vision: VisionInputs) -> None:
        pixels, grids = vision["pixel_values"], vision["image_grid_thw"]
        if not isinstance(grids, torch.Tensor) or grids.dim() != 2 or grids.shape[1] != 3:
            raise ValueError(f"image_grid_thw must be [N, 3] (time, height, width patches of each "
                             f"image), got {getattr(grids, 'shape', type(grids))}")
        if (grids < 1).any() or (grids[:, 1:] % self.merge).any():
            raise ValueError(f"image_grid_thw must be positive with height and width multiples of "
                             f"{self.merge}, got {grids.tolist()}")
        patches = int(grids.prod(-1).sum())
        if not isinstance(pixels, torch.Tensor) or tuple(pixels.shape) != (patches, self.patch_width):
            raise ValueError(f"pixel_values must be [{patches}, {self.patch_width}] (the patches "
                             f"of image_grid_thw), got {getattr(pixels, 'shape', type(pixels))}; "
                             f"use engine.generate() to preprocess raw images")

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        return (vision["image_grid_thw"].prod(-1) // self.merge ** 2).tolist()

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        out = self.hf.model.get_image_features(
            pixel_values=vision["pixel_values"].to(self.device),
            image_grid_thw=vision["image_grid_thw"].to(self.device))
        return list(out.pooler_output)

    def positions(self, input_ids, layouts, vision: VisionInputs):
        """Each prompt's M-RoPE positions ``[3, 1, T]`` and its next position, from the
        transformers model's ``get_rope_index`` on that prompt's own images."""
        out, image = [], 0
        grids = vision["image_grid_thw"]
        for ids, layout in zip(input_ids, layouts):
            ids = ids.to(self.device)[None]
            kinds = torch.where(ids == self.image_token_id, IMAGE, TEXT)
            own = grids[image:image + layout.n_images].to(self.device)
            image += layout.n_images
            positions, delta = self.hf.model.get_rope_index(ids, kinds, image_grid_thw=own)
            out.append((positions, ids.shape[1] + int(delta)))
        return out


class Qwen2_5VLModel(Qwen2VLModel):
    family = "qwen2_5_vl"
    hf_class = "Qwen2_5_VLForConditionalGeneration"


class Qwen3VLModel(Qwen2VLModel):
    """Qwen3-VL: Qwen3 text layers (RMSNorm on each head's query and key), interleaved M-RoPE, and
    DeepStack: features from intermediate layers of the vision tower are added to the hidden
    states of the first text layers at the visual tokens. When the first pruned layer K is
    among those layers, a dropped token's DeepStack features go with it: layers from K on see
    the kept tokens only, and only their features are added."""

    family = "qwen3_vl"
    hf_class = "Qwen3VLForConditionalGeneration"

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        out = self.hf.model.get_image_features(
            pixel_values=vision["pixel_values"].to(self.device),
            image_grid_thw=vision["image_grid_thw"].to(self.device))
        vision.deepstack = [list(level) for level in out.deepstack_features]
        return list(out.pooler_output)

    def deepstack_features(self, vision: VisionInputs, layouts) -> list[list[torch.Tensor]]:
        if vision.deepstack is None:
            vision.features = self.image_features(vision)
        out, image = [], 0
        for layout in layouts:
            own = slice(image, image + layout.n_images)
            out.append([torch.cat(level[own]) for level in vision.deepstack])
            image += layout.n_images
        return out
