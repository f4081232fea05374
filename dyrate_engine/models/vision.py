"""A batch's vision inputs as the checkpoint's processor makes them (``pixel_values`` and the
family's extra tensors, e.g. ``image_sizes``), and which of its images belong to which prompt."""
from __future__ import annotations

import torch

from .layout import VisualLayout


def merge_vision(parts: list[dict]) -> dict:
    """One batch's vision tensors from several requests' (each as its processor call made
    them): tensors concatenated along the first dimension, zero-padded in the others (AnyRes
    tile counts differ between calls; the image sizes say which tiles are real), lists joined."""
    merged = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if not isinstance(values[0], torch.Tensor):
            merged[name] = [x for v in values for x in (v.tolist() if hasattr(v, "tolist") else v)]
            continue
        shape = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
        padded = []
        for v in values:
            if list(v.shape[1:]) != shape:
                out = v.new_zeros(v.shape[0], *shape)
                out[(slice(None),) + tuple(slice(0, n) for n in v.shape[1:])] = v
                v = out
            padded.append(v)
        merged[name] = torch.cat(padded)
    return merged


class VisionInputs:
    """Every request's images (and videos), in order: the processor's tensors by name, and the
    vision tower's output once computed (``features`` one ``[tokens, d]`` tensor per image,
    ``video_features`` per video), so that checking the prompts against the images and the
    prefill share one run of the tower."""

    def __init__(self, tensors: dict):
        self.tensors = {name: t for name, t in tensors.items() if t is not None}
        self.features: list[torch.Tensor] | None = None
        self.video_features: list[torch.Tensor] | None = None
        self.deepstack: list[list[torch.Tensor]] | None = None  # [level][image], Qwen3-VL
        self.video_deepstack: list[list[torch.Tensor]] | None = None  # [level][video]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise ValueError(f"the vision inputs lack {name!r}")
        return self.tensors[name]

    def get(self, name: str, default=None):
        return self.tensors.get(name, default)

    def to(self, device) -> "VisionInputs":
        """The same inputs, and the tower's outputs once computed, on ``device``."""
        move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
        out = VisionInputs({name: move(t) for name, t in self.tensors.items()})
        if self.features is not None:
            out.features = [move(f) for f in self.features]
        if self.video_features is not None:
            out.video_features = [move(f) for f in self.video_features]
        for name in ("deepstack", "video_deepstack"):
            levels = getattr(self, name)
            if levels is not None:
                setattr(out, name, [[move(f) for f in level] for level in levels])
        return out


def assign_media(spans_per_prompt, tokens_per_item: list[int], token_id: int,
                 what: str = "images") -> list[int]:
    """How many of the items (images, or videos), taken in order, fill each prompt's runs of
    ``token_id`` exactly. A ValueError names the prompt whose tokens do not match."""
    counts, item = [], 0
    n_prompts, n_items = len(spans_per_prompt), len(tokens_per_item)
    for b, spans in enumerate(spans_per_prompt):
        need = sum(span.length for span in spans)
        first, made = item, 0
        while made < need and item < n_items:
            made += tokens_per_item[item]
            item += 1
        if made < need:
            raise ValueError(f"{n_prompts} prompts but {n_items} {what}: prompt {b}'s {need} "
                             f"{what[:-1]} tokens (id {token_id}) need more {what} than are left")
        if made != need:
            made_each = ", ".join(str(n) for n in tokens_per_item[first:item])
            raise ValueError(f"prompt {b} has {need} {what[:-1]} tokens (id {token_id}), but its "
                             f"{what} make exactly {made_each} tokens each")
        counts.append(item - first)
    if item != n_items:
        raise ValueError(f"{n_prompts} prompts but {n_items} {what}: their {what[:-1]} tokens "
                         f"ask for {item}")
    return counts


def layouts_of(image_spans, video_spans, n_images, n_videos) -> list[VisualLayout]:
    """Each prompt's layout from its image runs, video runs and media counts."""
    return [VisualLayout(tuple(sorted(images + videos, key=lambda span: span.start)), ni, nv,
                         tuple(videos))
            for images, videos, ni, nv in zip(image_spans, video_spans, n_images, n_videos)]
