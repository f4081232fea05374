"""Training data for the rate predictor: ``{image, prompt, answer}`` records from a JSONL file or
COCO-style caption annotations, encoded with the checkpoint's own processor and collated into
right-padded teacher-forcing batches."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_PROMPT = "Describe the image."


@dataclass
class Example:
    prompt_ids: torch.Tensor  # 1-D, the chat-formatted prompt with its image tokens
    answer_ids: torch.Tensor  # 1-D, the answer followed by EOS
    pixel_values: torch.Tensor  # [3, S, S]
    # The frozen layers' outputs (hidden after K-1 [T, d], type masses [T, H, 4], visual scores
    # [T, Nv]) when precomputed with ``trainer.precompute_monitor``; None to compute per step.
    monitor: tuple | None = None


@dataclass
class TeacherBatch:
    input_ids: torch.Tensor  # [B, T] prompt + answer, right-padded
    pixel_values: torch.Tensor  # [B, 3, S, S]
    vis_start: torch.Tensor  # [B]
    n_visual: torch.Tensor  # [B]
    prompt_len: torch.Tensor  # [B]
    answer_len: torch.Tensor  # [B] (EOS included)
    monitor: tuple | None = None  # padded [B, T, ...] versions of Example.monitor

    def to(self, device) -> "TeacherBatch":
        monitor = None if self.monitor is None else tuple(t.to(device) for t in self.monitor)
        return TeacherBatch(*(t.to(device) for t in (
            self.input_ids, self.pixel_values, self.vis_start, self.n_visual, self.prompt_len,
            self.answer_len)), monitor)


def load_jsonl(path) -> list[dict]:
    """Records ``{"image", "prompt", "answer"}``; image paths are relative to the file."""
    path = Path(path)
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{n}: not JSON ({error})") from None
        missing = {"image", "prompt", "answer"} - record.keys()
        if missing:
            raise ValueError(f"{path}:{n}: record lacks {sorted(missing)}")
        records.append({**record, "image": str(path.parent / record["image"])})
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def load_coco(annotations, image_dir, prompt: str = DEFAULT_PROMPT) -> list[dict]:
    """Records from COCO-style captions (``{"images": [{id, file_name}], "annotations":
    [{image_id, caption}]}``, as COCO, Flickr30K and NoCaps ship them): one per caption."""
    data = json.loads(Path(annotations).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    return [{"image": str(Path(image_dir) / files[a["image_id"]]), "prompt": prompt,
             "answer": a["caption"].strip(), "image_id": a["image_id"]}
            for a in data["annotations"]]


def encode(engine, records) -> list[Example]:
    """Encode records with the engine's processor (chat template, image preprocessing)."""
    from PIL import Image

    from ..engine.inputs import to_model_inputs

    tokenizer = engine.processor.tokenizer
    eos = engine.eos_token_ids[0] if engine.eos_token_ids else tokenizer.eos_token_id
    examples = []
    for r in records:
        with Image.open(r["image"]) as image:
            ids, pixels = to_model_inputs(engine, [image.convert("RGB")], [r["prompt"]])
        answer = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [eos]
        examples.append(Example(ids[0], torch.tensor(answer), pixels[0]))
    return examples


def collate(examples: list[Example], image_token_id: int, pad_id: int = 0) -> TeacherBatch:
    rows = [torch.cat([e.prompt_ids, e.answer_ids]) for e in examples]
    ids = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    vis_start, n_visual = [], []
    for i, (row, e) in enumerate(zip(rows, examples)):
        ids[i, :len(row)] = row
        where = (e.prompt_ids == image_token_id).nonzero()[:, 0]
        if len(where) == 0:
            raise ValueError(f"example {i} has no image tokens (id {image_token_id})")
        vis_start.append(int(where[0]))
        n_visual.append(len(where))
    monitor = None
    if all(e.monitor is not None for e in examples):
        monitor = tuple(_pad([e.monitor[i] for e in examples], ids.shape[1]) for i in range(3))
    return TeacherBatch(ids, torch.stack([e.pixel_values for e in examples]),
                        torch.tensor(vis_start), torch.tensor(n_visual),
                        torch.tensor([len(e.prompt_ids) for e in examples]),
                        torch.tensor([len(e.answer_ids) for e in examples]), monitor)


def _pad(tensors: list[torch.Tensor], T: int) -> torch.Tensor:
    """Zero-pad ``[T_i, X, ...]`` tensors to one ``[B, T, max X, ...]``."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = tensors[0].new_zeros(len(tensors), T, *shape)
    for i, t in enumerate(tensors):
        out[(i, slice(0, t.shape[0])) + tuple(slice(0, n) for n in t.shape[1:])] = t
    return out
