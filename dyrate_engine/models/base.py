"""The model adapter: what the engine, the trainer, the quality harness and the benchmarks need from a
vision-language model, in one object per family.

A family file (``llava.py``) subclasses :class:`VisionLanguageModel` and supplies what differs between
families: how a checkpoint loads, how pixels become visual features, how many visual tokens an image
makes and which pixel shapes the vision tower takes. What every family shares lives here: the text
decoder (our own, on the checkpoint's weights), the processor and its chat template, the search for
the visual span, the embedding splice and the positions. A new family is a new file registered in
``models/__init__.py``; nothing in the engine branches on the family.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .images import to_pil
from .llama import LlamaDecoder


@dataclass(frozen=True)
class VisualSpan:
    """A prompt's visual tokens: slots ``start`` to ``start + length - 1``, contiguous."""

    start: int
    length: int


def find_visual_span(ids: torch.Tensor, image_token_id: int) -> VisualSpan:
    """The run of ``image_token_id`` in the 1-D ``ids`` (length 0 when there is none); a
    ValueError when the image tokens are not one contiguous run."""
    where = (ids == image_token_id).nonzero()[:, 0]
    if len(where) == 0:
        return VisualSpan(0, 0)
    if int(where[-1] - where[0]) + 1 != len(where):
        raise ValueError("the image tokens must be contiguous")
    return VisualSpan(int(where[0]), len(where))


def visual_slots(vis_start: torch.Tensor, n_visual: torch.Tensor, length: int):
    """``(slots, real)``, both ``[B, max n_visual]``: the slot of each row's r-th visual token
    (clamped to ``length - 1`` past the row's count, so it can index a gather) and whether the
    row has an r-th visual token."""
    rank = torch.arange(int(n_visual.max()) if n_visual.numel() else 0, device=vis_start.device)
    slots = (vis_start[:, None] + rank).clamp(max=length - 1)
    return slots, rank < n_visual[:, None]


class VisionLanguageModel:
    """A loaded checkpoint of one family. ``hf`` is the transformers model (its vision tower runs
    once per request), ``decoder`` our text decoder on the same weight tensors, ``processor`` the
    checkpoint's processor (None for checkpoints without processor files)."""

    family = ""  # the config.json model_type that selects the family
    tokens_per_image: int  # visual tokens one image makes

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        self.hf = hf_model
        self.processor = processor
        self.config = hf_model.config
        text = self.config.text_config
        self.decoder = LlamaDecoder(text, hf_model.model.language_model, hf_model.lm_head.weight)
        self.image_token_id = self.config.image_token_id
        self.max_seq_len = max_seq_len or text.max_position_embeddings
        generation = getattr(hf_model, "generation_config", None)
        eos = getattr(generation, "eos_token_id", None) or text.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.pad_token_id = text.pad_token_id or 0

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def text_config(self):
        return self.decoder.config

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", None)

    # ------------------------------------------------------------------ what a family supplies
    def check_pixels(self, pixel_values: torch.Tensor, batch: int) -> None:
        """Raise a clear ValueError unless ``pixel_values`` fit ``batch`` requests."""
        raise NotImplementedError

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens ``[B, tokens_per_image, d]``, in the decoder's embedding space."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- shared parts
    def encode(self, images, prompts) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(input_ids per request, pixel_values)`` for one image per prompt, through the
        checkpoint's processor and chat template. ``prompts`` is a string or a list."""
        if self.processor is None:
            raise ValueError("this checkpoint has no processor files; use generate_ids() with "
                             "token ids")
        if isinstance(prompts, str):
            prompts, images = [prompts], [images]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images (one image per "
                             f"prompt)")
        ids, pixels = [], []
        for image, prompt in zip(images, prompts):
            inputs = self.processor(images=[to_pil(image)], text=[self.chat_text(prompt)],
                                    return_tensors="pt")
            ids.append(inputs["input_ids"][0])
            pixels.append(inputs["pixel_values"][0])
        return ids, torch.stack(pixels)

    def chat_text(self, prompt: str) -> str:
        """One user turn holding the image and ``prompt``, in the checkpoint's chat format."""
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                         {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        image_token = getattr(self.processor, "image_token", "<image>")
        return prompt if image_token in prompt else f"{image_token}\n{prompt}"

    def visual_span(self, ids: torch.Tensor, index: int = 0) -> VisualSpan:
        """Where the image of request ``index`` goes in its 1-D ``ids``; a ValueError naming the
        request when the image tokens are missing, too many or not contiguous."""
        count = int((ids == self.image_token_id).sum())
        if count != self.tokens_per_image:
            raise ValueError(f"prompt {index} has {count} image tokens (id "
                             f"{self.image_token_id}); the model expects exactly "
                             f"{self.tokens_per_image} for its one image")
        try:
            return find_visual_span(ids, self.image_token_id)
        except ValueError as error:
            raise ValueError(f"prompt {index}: {error}") from None

    def embed(self, input_ids: torch.Tensor, features: torch.Tensor, spans) -> torch.Tensor:
        """Token embeddings ``[B, T, d]`` of ``input_ids [B, T]`` with row ``b``'s visual
        features ``features[b]`` spliced in at ``spans[b]``."""
        h = self.decoder.embed_tokens[input_ids].clone()
        for b, span in enumerate(spans):
            h[b, span.start:span.start + span.length] = features[b, :span.length].to(h.dtype)
        return h

    def positions(self, length: int) -> torch.Tensor:
        """RoPE positions ``[1, length]`` of a prompt: one position per token, in order."""
        return torch.arange(length, device=self.device)[None]
