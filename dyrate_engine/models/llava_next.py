"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``) and LLaVA-OneVision
(``LlavaOnevisionForConditionalGeneration``): AnyRes tiling. An image is cut into tiles of the
vision tower's size, chosen by its aspect ratio (``image_grid_pinpoints``), besides a base view of
the whole image; the tiles' features are unpadded to the image's shape and every row ends with a
learned newline token. So an image makes a number of visual tokens that depends on its size.

The newline tokens are spliced in with the rest of the image's tokens: they are visual tokens for
the token-type split, and pruning may drop them like any other visual token, by attention. They
mark row ends for the model; keeping them would spend kept tokens on layout rather than content,
and the ranking already keeps those the model attends to.

OneVision differs in three ways the transformers model handles: a prompt with several images
gets each image's base view plus one newline (no tiles), large images are downsampled to at most
``vision_aspect_ratio`` tiles' worth of tokens, and the text model is usually Qwen2.
"""
from __future__ import annotations

import torch

from .base import VisionLanguageModel, check_pixel_shape
from .vision import VisionInputs


class LlavaNextModel(VisionLanguageModel):
    family = "llava_next"
    hf_class = "LlavaNextForConditionalGeneration"
    vision_keys = ("pixel_values", "image_sizes")

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        super().__init__(hf_model, processor, max_seq_len=max_seq_len)
        self.tile_size = self.config.vision_config.image_size

    def check_vision(self, vision: VisionInputs) -> None:
        pixel_values, sizes = vision["pixel_values"], vision["image_sizes"]
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() not in (4, 5):
            raise ValueError(f"pixel_values must be a [N, tiles, 3, H, W] tensor, got "
                             f"{getattr(pixel_values, 'shape', type(pixel_values))}")
        if pixel_values.dim() == 4:  # one tile per image
            vision.tensors["pixel_values"] = pixel_values = pixel_values[:, None]
        if not isinstance(sizes, torch.Tensor) or sizes.shape != (pixel_values.shape[0], 2):
            raise ValueError(f"image_sizes must be [{pixel_values.shape[0]}, 2] (height, width of "
                             f"each of the {pixel_values.shape[0]} images), got "
                             f"{getattr(sizes, 'shape', type(sizes))}")
        check_pixel_shape(pixel_values, self.tile_size, "image tiles")
        if (sizes < 1).any():
            raise ValueError(f"image_sizes must be positive, got {sizes.tolist()}")

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        # The unpadded tile grid and the downsampling are the transformers model's arithmetic:
        # count what it makes rather than copy it.
        if vision.features is None:
            vision.features = self.image_features(vision)
        return [f.shape[0] for f in vision.features]

    def feature_kwargs(self, vision: VisionInputs) -> dict:
        return {}

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        out = self.hf.model.get_image_features(
            pixel_values=vision["pixel_values"].to(self.device, self.hf.dtype),
            image_sizes=vision["image_sizes"].to(self.device), **self.feature_kwargs(vision))
        return list(getattr(out, "pooler_output", out))


class LlavaOnevisionModel(LlavaNextModel):
    family = "llava_onevision"
    hf_class = "LlavaOnevisionForConditionalGeneration"
    vision_keys = ("pixel_values", "image_sizes", "batch_num_images")

    def feature_kwargs(self, vision: VisionInputs) -> dict:
        counts = vision.get("batch_num_images")
        kwargs = {"vision_aspect_ratio": self.config.vision_aspect_ratio}
        if counts is not None:
            kwargs["batch_num_images"] = torch.as_tensor(counts).tolist()
        return kwargs
