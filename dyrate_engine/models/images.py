"""Images as the processors take them: any accepted input becomes an RGB PIL image; image files
are decoded only under a pixel limit (they are untrusted input: a small file can declare a huge
image)."""
from __future__ import annotations

import numpy as np
import torch

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; far above what any vision tower takes


def open_image(path, max_pixels: int = MAX_IMAGE_PIXELS):
    """The image file ``path`` as an RGB PIL image; a ValueError, before decoding, when its
    header declares more than ``max_pixels`` pixels or it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            check_pixels(image, path, max_pixels)
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file PIL can read") from None


def check_pixels(image, name, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise a ValueError when the (not yet decoded) ``image`` has more than ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"{name}: {width}x{height} pixels is over the limit of {max_pixels} "
                         f"pixels per image")


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
