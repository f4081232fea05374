"""Images as the processors take them: any accepted input becomes an RGB PIL image; image files
are decoded only under a pixel limit (they are untrusted input: a small file can declare a huge
image)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; far above what any vision tower takes


def open_image(path, max_pixels: int = MAX_IMAGE_PIXELS):
    """The image file ``path`` as an RGB PIL image (see :func:`to_rgb`), turned upright by its
    EXIF orientation; a ValueError naming the file, before decoding, when its header declares
    more than ``max_pixels`` pixels, and one when it is not an image or its data is cut short."""
    from PIL import Image, ImageOps

    with decoding(path, "not an image file PIL can read"):
        with Image.open(path) as image:
            check_pixels(image, path, max_pixels)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))


@contextmanager
def decoding(path, unreadable: str):
    """PIL's errors while decoding ``path`` as ValueErrors naming it (``unreadable``: what to say
    when PIL does not know the format); a missing file stays FileNotFoundError."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UnidentifiedImageError:
        raise ValueError(f"{path}: {unreadable}") from None
    except Image.DecompressionBombError as error:  # PIL's own limit, above ours by default
        raise ValueError(f"{path}: {error}") from None
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as error:  # truncated or corrupt data (PIL raises both)
        raise ValueError(f"{path}: the data is damaged or cut short ({error})") from None


def to_rgb(image):
    """An RGB copy of a PIL image, the way transformers' processors convert one: transparency
    (an alpha band, or a palette or grey image's transparent colour) composited onto white;
    16-bit samples scaled to 8 bits (PIL's own conversion clips them at 255)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.int64).clip(0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


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
        return to_rgb(image)
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
        return to_rgb(Image.fromarray(image.squeeze(-1) if image.shape[2] == 1 else image))
    raise ValueError(f"unsupported image type {type(image).__name__}")
