"""Images as the processors take them: any accepted input becomes an RGB PIL image."""
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
