"""Raw requests (images and text prompts) to model inputs through the checkpoint's processor."""
from __future__ import annotations

import numpy as np
import torch


def to_pil(image):
    """PIL image from a PIL image, an HWC uint8 array, or a CHW tensor (uint8, or float in [0, 1])."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be [3, H, W] (or [1, H, W]), got {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.clamp(0, 1) * 255).round()
        image = image.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"an image array must be [H, W, 3], got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8, got {image.dtype}")
        return Image.fromarray(image.squeeze(-1) if image.shape[2] == 1 else image).convert("RGB")
    raise ValueError(f"unsupported image type {type(image).__name__}")


def to_model_inputs(engine, images, prompts):
    """``(input_ids list, pixel_values [B, 3, S, S])`` for one image per prompt."""
    processor = engine.processor
    if processor is None:
        raise ValueError("this checkpoint has no processor files; use generate_ids() with token ids")
    if isinstance(prompts, str):
        prompts, images = [prompts], [images]
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images (one image per prompt)")
    image_token = getattr(processor, "image_token", "<image>")
    ids, pixels = [], []
    for image, prompt in zip(images, prompts):
        if getattr(processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                         {"type": "text", "text": prompt}]}]
            text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        else:
            text = prompt if image_token in prompt else f"{image_token}\n{prompt}"
        inputs = processor(images=[to_pil(image)], text=[text], return_tensors="pt")
        ids.append(inputs["input_ids"][0])
        pixels.append(inputs["pixel_values"][0])
    return ids, torch.stack(pixels)
