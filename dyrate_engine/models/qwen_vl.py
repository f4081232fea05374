"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) and Qwen2.5-VL
(``Qwen2_5_VLForConditionalGeneration``): dynamic resolution and M-RoPE.

The processor cuts an image into 14 px patches at (nearly) its own resolution, so an image makes
``t * h * w / merge**2`` visual tokens by its patch grid (``image_grid_thw``), each image between
a vision-start and a vision-end token. The vision tower (window attention in 2.5) runs through
transformers. The text model is Qwen2 layers with M-RoPE: text tokens step one position on all
three axes, an image's tokens take (time, row, column) positions from its grid, and the text after
an image resumes at the image's start plus ``max(h, w) / merge``. The positions come from the
transformers model's own ``get_rope_index``, per prompt; decoding then continues one past the
prompt's last position. Pruned tokens keep their three positions.
"""
from __future__ import annotations

import torch

from .base import VisionLanguageModel
from .video import video_patches
from .vision import VisionInputs

TEXT, IMAGE, VIDEO = 0, 1, 2  # transformers' mm_token_type_ids
TOWER_INPUTS = {"image": ("pixel_values", "image_grid_thw"),
                "video": ("pixel_values_videos", "video_grid_thw")}


class Qwen2VLModel(VisionLanguageModel):
    family = "qwen2_vl"
    hf_class = "Qwen2VLForConditionalGeneration"
    vision_keys = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        super().__init__(hf_model, processor, max_seq_len=max_seq_len)
        vision = self.config.vision_config
        self.merge = vision.spatial_merge_size
        self.patch_width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
        self.video_token_id = self.config.video_token_id

    def check_vision(self, vision: VisionInputs) -> None:
        if vision.get("image_grid_thw") is not None or vision.get("pixel_values") is not None:
            self._check_media(vision, "pixel_values", "image_grid_thw", "image")
        if vision.get("video_grid_thw") is not None or vision.get("pixel_values_videos") is not None:
            self._check_media(vision, "pixel_values_videos", "video_grid_thw", "video")

    def _check_media(self, vision: VisionInputs, pixels_key: str, grid_key: str, what: str):
        pixels, grids = vision.get(pixels_key), vision.get(grid_key)
        if not isinstance(grids, torch.Tensor) or grids.dim() != 2 or grids.shape[1] != 3:
            raise ValueError(f"{grid_key} must be [N, 3] (time, height, width patches of each "
                             f"{what}), got {getattr(grids, 'shape', type(grids))}")
        if (grids < 1).any() or (grids[:, 1:] % self.merge).any():
            raise ValueError(f"{grid_key} must be positive with height and width multiples of "
                             f"{self.merge}, got {grids.tolist()}")
        patches = int(grids.prod(-1).sum())
        if not isinstance(pixels, torch.Tensor) or tuple(pixels.shape) != (patches, self.patch_width):
            raise ValueError(f"{pixels_key} must be [{patches}, {self.patch_width}] (the patches "
                             f"of {grid_key}), got {getattr(pixels, 'shape', type(pixels))}; "
                             f"use engine.generate() to preprocess raw {what}s")

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        return self.token_counts(vision.get("image_grid_thw"))

    def video_token_counts(self, vision: VisionInputs) -> list[int]:
        return self.token_counts(vision.get("video_grid_thw"))

    def token_counts(self, grids) -> list[int]:
        """Visual tokens of each patch grid: its patches over the ``merge x merge`` merge."""
        return [] if grids is None else (grids.prod(-1) // self.merge ** 2).tolist()

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        return self.tower_features(vision, "image")

    def video_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        return self.tower_features(vision, "video")

    def tower_features(self, vision: VisionInputs, kind: str) -> list[torch.Tensor]:
        """Each image's (``kind="image"``) or video's visual tokens; [] for none."""
        out = self.run_tower(vision, kind)
        return [] if out is None else list(out.pooler_output)

    def run_tower(self, vision: VisionInputs, kind: str):
        """The transformers model's output for the images or the videos (None for none)."""
        pixels_key, grid_key = TOWER_INPUTS[kind]
        if vision.get(grid_key) is None:
            return None
        run = getattr(self.hf.model, f"get_{kind}_features")
        return run(**{pixels_key: vision[pixels_key].to(self.device),
                      grid_key: vision[grid_key].to(self.device)})

    def positions(self, input_ids, layouts, vision: VisionInputs):
        """Each prompt's M-RoPE positions ``[3, 1, T]`` and its next position, from the
        transformers model's ``get_rope_index`` on that prompt's own images and videos."""
        out, image, video = [], 0, 0
        for ids, layout in zip(input_ids, layouts):
            # On the host: get_rope_index walks the ids and grids in Python.
            ids = ids.cpu()[None]
            kinds = torch.where(ids == self.image_token_id, IMAGE, TEXT)
            kinds = torch.where(ids == self.video_token_id, VIDEO, kinds)
            own_images = slice(image, image + layout.n_images)
            own_videos = slice(video, video + layout.n_videos)
            image, video = image + layout.n_images, video + layout.n_videos
            grids = {}
            if layout.n_images:
                grids["image_grid_thw"] = vision["image_grid_thw"][own_images].cpu()
            if layout.n_videos:
                grids["video_grid_thw"] = vision["video_grid_thw"][own_videos].cpu()
            positions, _ = self.hf.model.get_rope_index(
                ids, kinds, **grids, **self.video_timing(vision, own_videos))
            # Decoding continues one past the last prompt token (text: one position on every
            # axis), as transformers' generate does and a forward over the whole text would;
            # a video stretched in time can reach past it, so this is not the largest + 1.
            out.append((positions.to(self.device), int(positions[:, 0, -1].max()) + 1))
        return out

    def video_timing(self, vision: VisionInputs, videos: slice) -> dict:
        """Extra ``get_rope_index`` arguments for these videos: none; Qwen2-VL steps one
        temporal position per frame pair, whatever the frame rate."""
        return {}

    # ------------------------------------------------------------------------------- video
    def encode_by_parts(self, prompts, images, videos):
        """``encode`` with videos, from the processor's parts (transformers' video processor
        needs torchvision): images through its image processor, videos
        through :func:`video.video_patches` with the same patching and pixel budget, each
        image's or video's pad token repeated once per visual token, then the tokenizer."""
        tensors, image_text, video_text = {}, [], []
        flat = [image for own in images for image in own]
        if flat:
            out = self.processor.image_processor(images=flat, return_tensors="pt")
            tensors.update(pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
            image_text = [self.processor.image_token * n
                          for n in self.token_counts(out["image_grid_thw"])]
        clips = [clip for own in videos for clip in own]
        if clips:
            tensors.update(self.video_tensors(clips))
            video_text = [self.video_placeholder(clip, grid)
                          for clip, grid in zip(clips, tensors["video_grid_thw"])]
        ids = []
        for prompt, own_images, own_videos in zip(prompts, images, videos):
            text = self.chat_text(prompt, len(own_images), len(own_videos))
            text = _expand(text, self.processor.image_token, image_text[:len(own_images)])
            text = _expand(text, self.processor.video_token, video_text[:len(own_videos)])
            image_text, video_text = image_text[len(own_images):], video_text[len(own_videos):]
            ids.append(torch.tensor(self.processor.tokenizer(text)["input_ids"]))
        return ids, VisionInputs(tensors)

    def video_placeholder(self, clip, grid) -> str:
        """The prompt text of one video: its pad token once per visual token."""
        return self.processor.video_token * self.token_counts(grid[None])[0]

    def video_tensors(self, clips) -> dict:
        """``pixel_values_videos`` and ``video_grid_thw`` of the clips (``video.Video``)."""
        settings = self.processor.image_processor
        patches, grids = zip(*(video_patches(
            clip.frames, patch=settings.patch_size, merge=settings.merge_size,
            temporal=settings.temporal_patch_size, mean=settings.image_mean,
            std=settings.image_std, min_pixels=settings.size.shortest_edge,
            max_pixels=settings.size.longest_edge) for clip in clips))
        return {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.stack(grids)}


def _expand(text: str, token: str, placeholders: list[str]) -> str:
    """``text`` with its i-th ``token`` replaced by ``placeholders[i]``."""
    parts = text.split(token)
    if len(parts) - 1 != len(placeholders):
        raise ValueError(f"the chat template wrote {len(parts) - 1} {token!r} tokens for "
                         f"{len(placeholders)} items")
    return parts[0] + "".join(p + part for p, part in zip(placeholders, parts[1:]))


class Qwen2_5VLModel(Qwen2VLModel):
    family = "qwen2_5_vl"
    hf_class = "Qwen2_5_VLForConditionalGeneration"
    vision_keys = Qwen2VLModel.vision_keys + ("second_per_grid_ts",)

    def video_timing(self, vision: VisionInputs, videos: slice) -> dict:
        """Qwen2.5-VL places a video's frame pairs by time: ``second_per_grid_ts`` seconds per
        pair, ``tokens_per_second`` positions per second (absolute time encoding)."""
        seconds = vision.get("second_per_grid_ts")
        return {} if seconds is None else {"second_per_grid_ts": seconds[videos]}

    def video_tensors(self, clips) -> dict:
        temporal = self.processor.image_processor.temporal_patch_size
        return dict(super().video_tensors(clips), second_per_grid_ts=torch.tensor(
            [temporal / clip.fps for clip in clips]))


class Qwen3VLModel(Qwen2VLModel):
    """Qwen3-VL: Qwen3 text layers (RMSNorm on each head's query and key), interleaved M-RoPE, and
    DeepStack: features from intermediate layers of the vision tower are added to the hidden
    states of the first text layers at the visual tokens. When the first pruned layer K is
    among those layers, a dropped token's DeepStack features go with it: layers from K on see
    the kept tokens only, and only their features are added."""

    family = "qwen3_vl"
    hf_class = "Qwen3VLForConditionalGeneration"

    @property
    def deepstack_layers(self) -> int:
        return len(self.hf.model.visual.deepstack_visual_indexes)

    def video_placeholder(self, clip, grid) -> str:
        """Qwen3-VL's video text: per frame pair, its time (the mean of the pair's frame times,
        frames taken at ``clip.fps``) as ``<t seconds>``, then the pair's tokens between
        vision markers, as transformers' processor writes it."""
        temporal = self.processor.image_processor.temporal_patch_size
        pairs, per_pair = int(grid[0]), self.token_counts(grid[None])[0] // int(grid[0])
        n_frames = len(clip.frames)
        index = [min(i, n_frames - 1) for i in range(pairs * temporal)]  # last frame repeated
        times = [(index[i] + index[i + temporal - 1]) / 2 / clip.fps
                 for i in range(0, len(index), temporal)]
        processor = self.processor
        return "".join(f"<{t:.1f} seconds>{processor.vision_start_token}"
                       f"{processor.video_token * per_pair}{processor.vision_end_token}"
                       for t in times)

    def tower_features(self, vision: VisionInputs, kind: str) -> list[torch.Tensor]:
        """As Qwen2-VL, keeping the DeepStack features of the images or videos on ``vision``."""
        out = self.run_tower(vision, kind)
        levels = [] if out is None else [list(level) for level in out.deepstack_features]
        setattr(vision, "deepstack" if kind == "image" else "video_deepstack", levels)
        return [] if out is None else list(out.pooler_output)

    def deepstack_features(self, vision: VisionInputs, layouts) -> list[list[torch.Tensor]]:
        if vision.deepstack is None or vision.video_deepstack is None:
            vision.features = self.image_features(vision)
            vision.video_features = self.video_features(vision)
        levels = self.deepstack_layers
        out, image, video = [], 0, 0
        for layout in layouts:
            own_images = slice(image, image + layout.n_images)
            own_videos = slice(video, video + layout.n_videos)
            image, video = image + layout.n_images, video + layout.n_videos
            out.append([layout.in_slot_order(
                vision.deepstack[level][own_images] if vision.deepstack else [],
                vision.video_deepstack[level][own_videos] if vision.video_deepstack else [])
                for level in range(levels)])
        return out
