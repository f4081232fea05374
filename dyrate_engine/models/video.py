"""Video frames as the Qwen-VL vision towers take them, without torchvision.

transformers' video processors need torchvision; this is the same preparation on PIL and torch:
every frame resized to one size whose sides are multiples of ``patch * merge`` within the pixel
budget (transformers' own ``smart_resize``), scaled to [0, 1] and normalised, the frame count
padded to a multiple of ``temporal`` by repeating the last frame, and the clip cut into
``temporal x patch x patch`` patches ordered as the tower merges them (``merge x merge`` blocks
of neighbouring patches together).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .images import MAX_IMAGE_PIXELS, check_pixels, decoding, open_image, to_pil, to_rgb

# The rate transformers' video processors assume for frames that come without metadata.
DEFAULT_FPS = 24.0
# transformers' Qwen2-VL video processor bounds: 128 to 768 visual tokens per frame pair, at
# most 768 frames.
MIN_TOKENS_PER_FRAME, MAX_TOKENS_PER_FRAME, MAX_FRAMES = 128, 768, 768


@dataclass
class Video:
    """A clip: its frames in order (images, or a ``[T, H, W, C]`` uint8 array) and the rate they
    were sampled at, which sets how far apart in time Qwen2.5-VL places them."""

    frames: object
    fps: float = DEFAULT_FPS

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"a video's fps must be positive, got {self.fps}")


def as_videos(entry) -> list[Video]:
    """One prompt's videos: None (none), one video (a :class:`Video`, a list of frames or a
    ``[T, H, W, C]`` array) or a list of :class:`Video`."""
    if entry is None:
        return []
    if isinstance(entry, Video):
        return [entry]
    if isinstance(entry, (list, tuple)) and entry and all(isinstance(v, Video) for v in entry):
        return list(entry)
    return [Video(entry)]


def as_frames(video) -> list:
    """The frames of a video given as a list of images or a ``[T, H, W, C]`` uint8 array."""
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim == 4:
        video = list(video)
    if not isinstance(video, (list, tuple)) or not video:
        raise ValueError("a video is a non-empty list of frames or a [T, H, W, C] array")
    if len(video) > MAX_FRAMES:
        raise ValueError(f"a video has at most {MAX_FRAMES} frames, got {len(video)}; sample "
                         f"it more sparsely")
    frames = []
    for frame in video:
        if isinstance(frame, torch.Tensor) and frame.dim() == 3 and frame.shape[-1] in (1, 3):
            frame = frame.permute(2, 0, 1)  # HWC tensor -> CHW, as to_pil takes tensors
        frames.append(to_pil(frame))
    return frames


def video_patches(frames, *, patch: int, merge: int, temporal: int, mean, std,
                  min_pixels: int, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(patches [t * h * w, 3 * temporal * patch**2], grid [t, h, w])`` of one clip. Each
    frame's pixels stay within ``[min_pixels, max_pixels]`` and within the video bounds."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    frames = as_frames(frames)
    width, height = frames[0].size
    factor = patch * merge
    new_h, new_w = smart_resize(
        height, width, factor=factor,
        min_pixels=min(min_pixels, MIN_TOKENS_PER_FRAME * factor ** 2),
        max_pixels=min(max_pixels, MAX_TOKENS_PER_FRAME * factor ** 2))
    pixels = np.stack([np.asarray(f.convert("RGB").resize((new_w, new_h), Image.BICUBIC),
                                  dtype=np.float32) for f in frames]) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    clip = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # [T, C, H, W]
    if clip.shape[0] % temporal:
        pad = clip[-1:].expand(temporal - clip.shape[0] % temporal, -1, -1, -1)
        clip = torch.cat([clip, pad])
    t, h, w = clip.shape[0] // temporal, new_h // patch, new_w // patch
    blocks = clip.reshape(t, temporal, 3, h // merge, merge, patch, w // merge, merge, patch)
    # Order: time, block row, block column, row in block, column in block; then the patch's
    # channels, frames, pixel rows and pixel columns.
    blocks = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(t * h * w, 3 * temporal * patch * patch), torch.tensor([t, h, w])


FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def open_video(path, fps: float = DEFAULT_FPS) -> Video:
    """A :class:`Video` from a directory of frame images (in file-name order) or an animated
    image file (GIF, WebP, APNG), every frame under the image pixel limit."""
    from pathlib import Path

    from PIL import Image, ImageSequence

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no frame images ({', '.join(FRAME_SUFFIXES)}) in it")
        if len(files) > MAX_FRAMES:
            raise ValueError(f"{path}: {len(files)} frames; a video has at most {MAX_FRAMES}")
        return Video([open_image(f) for f in files], fps)
    with decoding(path, "not a frame directory or an animated image"):
        with Image.open(path) as animation:
            check_pixels(animation, path, MAX_IMAGE_PIXELS)
            frames = []
            for frame in ImageSequence.Iterator(animation):
                if len(frames) == MAX_FRAMES:
                    raise ValueError(f"{path}: more than {MAX_FRAMES} frames")
                frames.append(to_rgb(frame))
    return Video(frames, fps)
