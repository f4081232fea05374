"""Training data for the rate predictor: records encoded with the checkpoint's own processor into
examples, and examples collated into right-padded teacher-forcing batches."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..engine import Engine
from ..models.base import VisionLanguageModel
from ..models.images import open_image
from ..models.layout import VisualLayout, slot_table
from ..models.vision import VisionInputs, merge_vision


def adapter(model) -> VisionLanguageModel:
    """The model adapter that training runs on; an Engine (what these functions took before)
    gives its adapter, with a DeprecationWarning."""
    if isinstance(model, Engine):
        warnings.warn("training functions take the model adapter: pass engine.model, not the "
                      "engine", DeprecationWarning, stacklevel=3)
        return model.model
    if not isinstance(model, VisionLanguageModel):
        raise TypeError(f"expected a model adapter (e.g. engine.model), got {type(model).__name__}")
    return model


@dataclass
class Example:
    prompt_ids: torch.Tensor  # 1-D, the chat-formatted prompt with its image tokens
    answer_ids: torch.Tensor  # 1-D, the answer followed by EOS
    pixel_values: torch.Tensor  # the prompt's images, as the model's processor makes them
    # The frozen layers' outputs (hidden after K-1 [T, d], type masses [T, H, 4], visual scores
    # [T, Nv]) when precomputed with ``trainer.precompute_monitor``; None to compute per step.
    monitor: tuple | None = None
    extra: dict = field(default_factory=dict)  # the family's other vision tensors (image_sizes, ...)


@dataclass
class TeacherBatch:
    input_ids: torch.Tensor  # [B, T] prompt + answer, right-padded
    vision: VisionInputs  # every row's images, in order (the tower runs once per batch)
    prompt_len: torch.Tensor  # [B]
    answer_len: torch.Tensor  # [B] (EOS included)
    layouts: list[VisualLayout]  # where each row's visual tokens are
    positions: torch.Tensor  # RoPE positions [B, T], or [3, B, T] under M-RoPE
    monitor: tuple | None = None  # padded [B, T, ...] versions of Example.monitor

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.vision["pixel_values"]

    @cached_property
    def vis_start(self) -> torch.Tensor:
        """``[B]`` first visual slot of each row."""
        return torch.tensor([lay.vis_start for lay in self.layouts], device=self.input_ids.device)

    @cached_property
    def n_visual(self) -> torch.Tensor:
        """``[B]`` visual tokens of each row."""
        return torch.tensor([lay.n_visual for lay in self.layouts], device=self.input_ids.device)

    @cached_property
    def vis_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(slots, real)`` ``[B, max n_visual]``: each row's visual slots, and which are real."""
        return slot_table(self.layouts, self.input_ids.device)

    def to(self, device) -> "TeacherBatch":
        monitor = None if self.monitor is None else tuple(t.to(device) for t in self.monitor)
        return TeacherBatch(self.input_ids.to(device), self.vision.to(device),
                            self.prompt_len.to(device),
                            self.answer_len.to(device), self.layouts, self.positions.to(device),
                            monitor)


def encode(model: VisionLanguageModel, records) -> list[Example]:
    """Encode ``{image, prompt, answer}`` records with the model's processor (chat template,
    image preprocessing); each answer ends with the model's EOS."""
    model = adapter(model)
    tokenizer = model.tokenizer
    eos = model.eos_token_ids[0] if model.eos_token_ids else tokenizer.eos_token_id
    examples = []
    for r in records:
        paths = r["image"] if isinstance(r["image"], (list, tuple)) else [r["image"]]
        images = [open_image(path) for path in paths]
        ids, vision = model.encode([images], [r["prompt"]])
        answer = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [eos]
        extra = {k: v for k, v in vision.tensors.items() if k != "pixel_values"}
        examples.append(Example(ids[0], torch.tensor(answer), vision["pixel_values"],
                                extra=extra))
    return examples


def collate(examples: list[Example], model: VisionLanguageModel) -> TeacherBatch:
    """Prompt + answer rows right-padded with the model's pad id; where each prompt's visual
    tokens are, found (and checked) by the model."""
    if isinstance(model, int):
        raise TypeError("collate() takes the model adapter, not an image token id: "
                        "collate(examples, engine.model)")
    model = adapter(model)
    rows = [torch.cat([e.prompt_ids, e.answer_ids]) for e in examples]
    ids = torch.full((len(rows), max(len(r) for r in rows)), model.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    monitor = None
    if all(e.monitor is not None for e in examples):
        monitor = tuple(_pad([e.monitor[i] for e in examples], ids.shape[1]) for i in range(3))
    # One LLaVA image is [3, S, S] (what encode made before several images per prompt).
    vision = VisionInputs(merge_vision([{"pixel_values": e.pixel_values[None]
                                         if e.pixel_values.dim() == 3 else e.pixel_values,
                                         **e.extra} for e in examples]))
    prompts = [e.prompt_ids for e in examples]
    layouts = model.visual_layouts(prompts, vision)
    positions = _positions(model, prompts, layouts, vision, [len(e.answer_ids) for e in examples],
                           ids.shape[1])
    return TeacherBatch(ids, vision, torch.tensor([len(e.prompt_ids) for e in examples]),
                        torch.tensor([len(e.answer_ids) for e in examples]), layouts, positions,
                        monitor)


def _positions(model, prompts, layouts, vision, answer_lens, width) -> torch.Tensor:
    """RoPE positions of every row, prompt then answer (the answer continuing from the
    prompt's next position, as decoding does), right-padded to ``width``."""
    rows = []
    for (prompt, next_position), n in zip(model.positions(prompts, layouts, vision), answer_lens):
        prompt = prompt.reshape(-1, prompt.shape[-1]).cpu()  # [axes, P]
        tail = next_position + torch.arange(width - prompt.shape[1])
        rows.append(torch.cat([prompt, tail.expand(prompt.shape[0], -1)], dim=1))
    positions = torch.stack(rows, dim=1)  # [axes, B, width]
    return positions[0] if positions.shape[0] == 1 else positions


def _pad(tensors: list[torch.Tensor], T: int) -> torch.Tensor:
    """Zero-pad ``[T_i, X, ...]`` tensors to one ``[B, T, max X, ...]``."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = tensors[0].new_zeros(len(tensors), T, *shape)
    for i, t in enumerate(tensors):
        out[(i, slice(0, t.shape[0])) + tuple(slice(0, n) for n in t.shape[1:])] = t
    return out
