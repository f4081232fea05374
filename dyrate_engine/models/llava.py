"""LLaVA-1.5 (``LlavaForConditionalGeneration``): a CLIP-style vision tower and an MLP projector
make a fixed number of visual tokens per square image, spliced into a Llama / Mistral / Qwen2
text model at the prompt's image tokens, one run per image (or per run of adjacent images)."""
from __future__ import annotations

from pathlib import Path

import torch

from .base import VisionLanguageModel
from .vision import VisionInputs
from .llama import SUPPORTED_TEXT_MODELS

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer.json")


class LlavaModel(VisionLanguageModel):
    family = "llava"

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        super().__init__(hf_model, processor, max_seq_len=max_seq_len)
        vision = self.config.vision_config
        self.image_size = vision.image_size
        cls_token = 1 if self.config.vision_feature_select_strategy == "full" else 0
        self.tokens_per_image = (vision.image_size // vision.patch_size) ** 2 + cls_token

    @classmethod
    def load(cls, path: Path, config: dict, *, device="cpu", dtype=None,
             max_seq_len: int | None = None) -> "LlavaModel":
        """The checkpoint in ``path`` (config and safetensors weights; processor files optional),
        e.g. llava-hf/llava-1.5-7b-hf or a model saved with ``save_pretrained``."""
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        text_type = (config.get("text_config") or {}).get("model_type", "llama")
        if text_type not in SUPPORTED_TEXT_MODELS:
            raise ValueError(f"{path} holds a 'llava' model with a {text_type!r} text model; "
                             f"supported text models: {', '.join(SUPPORTED_TEXT_MODELS)}")
        # safetensors only: weight files are untrusted input and are never unpickled.
        hf = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=dtype or torch.float32, use_safetensors=True).to(device).eval()
        has_processor = any((path / f).is_file() for f in PROCESSOR_FILES)
        processor = AutoProcessor.from_pretrained(path) if has_processor else None
        return cls(hf, processor, max_seq_len=max_seq_len)

    def check_vision(self, vision: VisionInputs) -> None:
        pixel_values = vision["pixel_values"]
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be a [N, 3, H, W] tensor, got "
                             f"{getattr(pixel_values, 'shape', type(pixel_values))}")
        if pixel_values.shape[1] != 3:
            raise ValueError(f"images must have 3 channels, got {pixel_values.shape[1]}")
        if tuple(pixel_values.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(f"images must be {self.image_size}x{self.image_size} pixels (the "
                             f"vision tower's size), got {tuple(pixel_values.shape[2:])}; use "
                             f"engine.generate() to preprocess raw images")

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        return [self.tokens_per_image] * vision["pixel_values"].shape[0]

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        pixel_values = vision["pixel_values"]
        out = self.hf.model.get_image_features(
            pixel_values=pixel_values.to(self.device, self.hf.dtype))
        features = getattr(out, "pooler_output", out)
        return list(features)
