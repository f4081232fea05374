"""LLaVA-1.5 (``LlavaForConditionalGeneration``): a CLIP-style vision tower and an MLP projector
make a fixed number of visual tokens per square image, spliced into a Llama / Mistral / Qwen2
text model at the prompt's image tokens, one run per image (or per run of adjacent images)."""
from __future__ import annotations

import torch

from .base import VisionLanguageModel, check_pixel_shape
from .vision import VisionInputs


class LlavaModel(VisionLanguageModel):
    family = "llava"
    hf_class = "LlavaForConditionalGeneration"

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        super().__init__(hf_model, processor, max_seq_len=max_seq_len)
        vision = self.config.vision_config
        self.image_size = vision.image_size
        cls_token = 1 if self.config.vision_feature_select_strategy == "full" else 0
        self.tokens_per_image = (vision.image_size // vision.patch_size) ** 2 + cls_token

    def check_vision(self, vision: VisionInputs) -> None:
        pixel_values = vision["pixel_values"]
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be a [N, 3, H, W] tensor, got "
                             f"{getattr(pixel_values, 'shape', type(pixel_values))}")
        check_pixel_shape(pixel_values, self.image_size)

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        return [self.tokens_per_image] * vision["pixel_values"].shape[0]

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        pixel_values = vision["pixel_values"]
        out = self.hf.model.get_image_features(
            pixel_values=pixel_values.to(self.device, self.hf.dtype))
        features = getattr(out, "pooler_output", out)
        return list(features)
