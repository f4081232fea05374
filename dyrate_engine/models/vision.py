"""A batch's vision inputs as the checkpoint's processor makes them (``pixel_values`` and the
family's extra tensors, e.g. ``image_sizes``), and which of its images belong to which prompt."""
from __future__ import annotations

import torch

from .layout import VisualLayout, VisualSpan


class VisionInputs:
    """Every request's images, in order: the processor's tensors by name, and the vision tower's
    output once computed (``features``, one ``[tokens, d]`` tensor per image), so that checking
    the prompts against the images and the prefill share one run of the tower."""

    def __init__(self, tensors: dict):
        self.tensors = {name: t for name, t in tensors.items() if t is not None}
        self.features: list[torch.Tensor] | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise ValueError(f"the vision inputs lack {name!r}")
        return self.tensors[name]

    def get(self, name: str, default=None):
        return self.tensors.get(name, default)


def assign_images(spans_per_prompt: list[tuple[VisualSpan, ...]], tokens_per_image: list[int],
                  image_token_id: int) -> list[VisualLayout]:
    """Each prompt's layout: its runs of image tokens and the images, taken in order, whose
    tokens fill them exactly. A ValueError names the prompt whose tokens do not match."""
    layouts, image = [], 0
    n_prompts, n_images = len(spans_per_prompt), len(tokens_per_image)
    for b, spans in enumerate(spans_per_prompt):
        need = sum(span.length for span in spans)
        if need == 0:
            raise ValueError(f"prompt {b} has 0 image tokens (id {image_token_id}); a prompt "
                             f"holds at least one image")
        first, made = image, 0
        while made < need and image < n_images:
            made += tokens_per_image[image]
            image += 1
        if made < need:
            raise ValueError(f"{n_prompts} prompts but {n_images} images: prompt {b}'s {need} "
                             f"image tokens (id {image_token_id}) need more images than are left")
        if made != need:
            counts = ", ".join(str(n) for n in tokens_per_image[first:image])
            raise ValueError(f"prompt {b} has {need} image tokens (id {image_token_id}), but its "
                             f"images make exactly {counts} tokens each")
        layouts.append(VisualLayout(spans, image - first))
    if image != n_images:
        raise ValueError(f"{n_prompts} prompts but {n_images} images: their image tokens ask "
                         f"for {image}")
    return layouts
