"""Turns requests into the tensors the engine runs: validation with clear errors (before any
work), the visual span of each prompt, and the spliced prompt embeddings."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PreparedBatch:
    input_ids: list[torch.Tensor]  # 1-D int64 per request
    vis_start: list[int]
    n_visual: list[int]
    pixel_values: torch.Tensor  # [B, 3, S, S]

    @property
    def prompt_lens(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def validate_request(input_ids, pixel_values, *, image_token_id, tokens_per_image, image_size,
                     max_new_tokens, capacity_limit) -> PreparedBatch:
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1:
        input_ids = [input_ids]
    input_ids = [torch.as_tensor(ids, dtype=torch.long).cpu() for ids in input_ids]
    if not input_ids:
        raise ValueError("no requests: input_ids is empty")
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be a [B, 3, H, W] tensor, got "
                         f"{getattr(pixel_values, 'shape', type(pixel_values))}")
    B = len(input_ids)
    if pixel_values.shape[0] != B:
        raise ValueError(f"{B} prompts but {pixel_values.shape[0]} images (one image per prompt)")
    if pixel_values.shape[1] != 3:
        raise ValueError(f"images must have 3 channels, got {pixel_values.shape[1]}")
    if tuple(pixel_values.shape[2:]) != (image_size, image_size):
        raise ValueError(f"images must be {image_size}x{image_size} pixels (the vision tower's "
                         f"size), got {tuple(pixel_values.shape[2:])}; use engine.generate() to "
                         f"preprocess raw images")
    vis_start, n_visual = [], []
    for b, ids in enumerate(input_ids):
        if ids.dim() != 1:
            raise ValueError(f"prompt {b}: input_ids must be 1-D, got shape {tuple(ids.shape)}")
        where = (ids == image_token_id).nonzero()[:, 0]
        if len(where) != tokens_per_image:
            raise ValueError(f"prompt {b} has {len(where)} image tokens (id {image_token_id}); "
                             f"the model expects exactly {tokens_per_image} for its one image")
        if int(where[-1] - where[0]) + 1 != len(where):
            raise ValueError(f"prompt {b}: the image tokens must be contiguous")
        total = len(ids) + max_new_tokens
        if total > capacity_limit:
            raise ValueError(f"prompt {b}: {len(ids)} prompt tokens + max_new_tokens "
                             f"{max_new_tokens} = {total} exceeds the engine's capacity "
                             f"{capacity_limit} (max_seq_len)")
        vis_start.append(int(where[0]))
        n_visual.append(len(where))
    return PreparedBatch(input_ids, vis_start, n_visual, pixel_values)
