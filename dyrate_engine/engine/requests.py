"""A generate call's inputs as the engine's sequences, validated with clear errors before any work."""
from __future__ import annotations

import torch

from ..models.base import VisionLanguageModel
from ..models.vision import VisionInputs
from .results import GenerationStats
from .sampling import SamplingParams
from .sequence import Sequence


def make_sequences(model: VisionLanguageModel, input_ids, vision: VisionInputs,
                   params: SamplingParams, *, output_logits: bool = False) -> list[Sequence]:
    """One :class:`Sequence` per prompt of ``input_ids`` (a 1-D tensor or a list of them, each
    holding the model's image tokens where its images go), checked against ``vision`` (every
    prompt's images, in order) and against the model's capacity for ``params.max_new_tokens``
    more tokens."""
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1:
        input_ids = [input_ids]
    input_ids = [torch.as_tensor(ids, dtype=torch.long).cpu() for ids in input_ids]
    if not input_ids:
        raise ValueError("no requests: input_ids is empty")
    for b, ids in enumerate(input_ids):
        if ids.dim() != 1:
            raise ValueError(f"prompt {b}: input_ids must be 1-D, got shape {tuple(ids.shape)}")
    sequences = []
    for b, (ids, layout) in enumerate(zip(input_ids, model.visual_layouts(input_ids, vision))):
        total = len(ids) + params.max_new_tokens
        if total > model.max_seq_len:
            raise ValueError(f"prompt {b}: {len(ids)} prompt tokens + max_new_tokens "
                             f"{params.max_new_tokens} = {total} exceeds the engine's capacity "
                             f"{model.max_seq_len} (max_seq_len)")
        stats = GenerationStats(prompt_tokens=len(ids), n_visual=layout.n_visual)
        sequences.append(Sequence(b, ids, layout, stats, logits=[] if output_logits else None))
    return sequences
