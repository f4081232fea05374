"""The model adapter: what the engine, the trainer, the quality harness and the benchmarks need from a
vision-language model, in one object per family.

A family file (``llava.py``) subclasses :class:`VisionLanguageModel` and supplies what differs between
families: how a checkpoint loads, how pixels become visual features, how many visual tokens an image
makes and which pixel shapes the vision tower takes. What every family shares lives here: the text
decoder (our own, on the checkpoint's weights), the processor and its chat template, the search for
the visual tokens (``layout``), the embedding splice and the positions. A new family is a new file registered in
``models/__init__.py``; nothing in the engine branches on the family.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .images import to_pil
from .layout import VisualLayout, find_visual_spans
from .llama import SUPPORTED_TEXT_MODELS, LlamaDecoder
from .processors import load_processor
from .video import as_videos
from .vision import VisionInputs, assign_media, layouts_of
from .weights import load_weights


def check_pixel_shape(pixels: torch.Tensor, size: int, what: str = "images") -> None:
    """Raise a clear ValueError unless ``pixels [..., 3, size, size]`` fit the vision tower."""
    if pixels.shape[-3] != 3:
        raise ValueError(f"{what} must have 3 channels, got {pixels.shape[-3]}")
    if tuple(pixels.shape[-2:]) != (size, size):
        raise ValueError(f"{what} must be {size}x{size} pixels (the vision tower's size), got "
                         f"{tuple(pixels.shape[-2:])}; use engine.generate() to preprocess raw "
                         f"images")


class VisionLanguageModel:
    """A loaded checkpoint of one family. ``hf`` is the transformers model (its vision tower runs
    once per batch), ``decoder`` our text decoder on the same weight tensors, ``processor`` the
    checkpoint's processor (None for checkpoints without processor files)."""

    family = ""  # the config.json model_type that selects the family
    hf_class = ""  # the transformers class that loads it

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

    @classmethod
    def load(cls, path: Path, config: dict, *, device="cpu", dtype=None,
             max_seq_len: int | None = None, text_layers: bool = True) -> "VisionLanguageModel":
        """The checkpoint in ``path`` (config and safetensors weights; processor files
        optional), e.g. llava-hf/llava-1.5-7b-hf or a model saved with ``save_pretrained``.
        ``text_layers=False``: without the text decoder's layers (``sharding.shard_model``
        reads a tensor-parallel rank's shard of them)."""
        import transformers

        text_type = (config.get("text_config") or {}).get("model_type", "llama")
        if text_type not in SUPPORTED_TEXT_MODELS:
            raise ValueError(f"{path} holds a {cls.family!r} model with a {text_type!r} text "
                             f"model; supported text models: {', '.join(SUPPORTED_TEXT_MODELS)}")
        # safetensors only: weight files are untrusted input and are never unpickled.
        hf = load_weights(getattr(transformers, cls.hf_class), path, dtype or torch.float32,
                          text_layers=text_layers).to(device).eval()
        return cls(hf, load_processor(path), max_seq_len=max_seq_len)

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
    #: The processor outputs that carry the images (generate_ids takes the same names).
    vision_keys: tuple[str, ...] = ("pixel_values",)

    def check_vision(self, vision: VisionInputs) -> None:
        """Raise a clear ValueError unless the vision tensors are shaped for this family."""
        raise NotImplementedError

    def image_token_counts(self, vision: VisionInputs) -> list[int]:
        """How many visual tokens each image of ``vision`` makes, in order."""
        raise NotImplementedError

    def image_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        """Each image's visual tokens ``[tokens, d]``, in the decoder's embedding space."""
        raise NotImplementedError

    #: The token of video frames in a prompt (None: the family takes no video).
    video_token_id: int | None = None

    def video_token_counts(self, vision: VisionInputs) -> list[int]:
        """How many visual tokens each video of ``vision`` makes, in order."""
        return []

    def video_features(self, vision: VisionInputs) -> list[torch.Tensor]:
        """Each video's visual tokens ``[tokens, d]``."""
        return []

    #: How many first layers take added visual features (``deepstack_features``); 0 for none.
    deepstack_layers: int = 0

    def deepstack_features(self, vision: VisionInputs, layouts) -> list[list[torch.Tensor]] | None:
        """Visual features the family adds to the hidden states after its first layers (Qwen3-VL's
        DeepStack): per request, per layer, ``[n_visual, d]`` in slot order; None for none."""
        return None

    def positions(self, input_ids, layouts, vision: VisionInputs):
        """Each prompt's RoPE positions (``[1, T]``; ``[3, 1, T]`` under M-RoPE) and the
        position of its next token: one position per token, in order, for 1-D RoPE."""
        return [(torch.arange(len(ids), device=self.device)[None], len(ids)) for ids in input_ids]

    # ------------------------------------------------------------------------- shared parts
    def encode(self, images, prompts, videos=None) -> tuple[list[torch.Tensor], VisionInputs]:
        """``(input_ids per request, vision inputs of every image in order)`` through the
        checkpoint's processor and chat template, in one call for the batch. ``prompts`` is a
        string or a list; each prompt's images are one image or a list of them (a PIL image,
        an HWC uint8 array or a CHW tensor each), shown before its text. ``videos``: each
        prompt's videos (see ``video.as_videos``), for families that take video."""
        prompts, images, videos = self.media_per_prompt(images, prompts, videos)
        if any(videos):
            return self.encode_by_parts(prompts, images, videos)
        texts = [self.chat_text(p, len(own)) for p, own in zip(prompts, images)]
        out = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        ids = [row[mask.bool()] for row, mask in zip(out["input_ids"], out["attention_mask"])]
        return ids, VisionInputs({name: out.get(name) for name in self.vision_keys})

    def encode_chat(self, conversation: list[dict], images) -> tuple[torch.Tensor, VisionInputs]:
        """``(input_ids, vision inputs)`` of one conversation: messages ``{"role", "content":
        [{"type": "text", "text"} | {"type": "image"}]}`` in the checkpoint's chat format
        (with the assistant's turn opened), ``images`` the image parts' images in order."""
        if self.processor is None:
            raise ValueError("this checkpoint has no processor files; use generate_ids() with "
                             "token ids")
        if getattr(self.processor, "chat_template", None):
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        else:
            image_token = getattr(self.processor, "image_token", "<image>")
            text = "\n".join(part["text"] if part["type"] == "text" else image_token
                             for message in conversation for part in message["content"])
        pil = [to_pil(image) for image in images]
        out = self.processor(images=pil or None, text=[text], return_tensors="pt")
        return out["input_ids"][0], VisionInputs({name: out.get(name) for name in self.vision_keys})

    def encode_by_parts(self, prompts, images, videos):
        """:meth:`encode` of prompts with videos (from :meth:`media_per_prompt`), for the
        families that take video."""
        raise ValueError(f"a {self.family!r} model takes no video input")

    def media_per_prompt(self, images, prompts, videos=None):
        """``(prompts, PIL images per prompt, videos per prompt)`` from :meth:`encode`'s
        arguments, with a clear error for entries that do not line up."""
        if self.processor is None:
            raise ValueError("this checkpoint has no processor files; use generate_ids() with "
                             "token ids")
        if isinstance(prompts, str):
            prompts, images, videos = [prompts], [images], [videos]
        images = [None] * len(prompts) if images is None else images
        videos = [None] * len(prompts) if videos is None else videos
        for what, entries in (("image", images), ("video", videos)):
            if len(entries) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(entries)} {what} entries (one "
                                 f"entry per prompt)")
        nested, clips = [], [as_videos(entry) for entry in videos]
        for b, entry in enumerate(images):
            own = [] if entry is None else list(entry) if isinstance(entry, (list, tuple)) \
                else [entry]
            if not own and not clips[b]:
                raise ValueError(f"prompt {b} has no image")
            nested.append([to_pil(image) for image in own])
        return list(prompts), nested, clips

    def chat_text(self, prompt: str, n_images: int = 1, n_videos: int = 0) -> str:
        """One user turn holding ``n_images`` images, ``n_videos`` videos and then ``prompt``,
        in the checkpoint's chat format."""
        if getattr(self.processor, "chat_template", None):
            content = ([{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
                       + [{"type": "text", "text": prompt}])
            conversation = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        image_token = getattr(self.processor, "image_token", "<image>")
        if image_token in prompt:
            return prompt
        video_token = getattr(self.processor, "video_token", "<video>")
        return f"{image_token}\n" * n_images + f"{video_token}\n" * n_videos + prompt

    def visual_layouts(self, input_ids, vision: VisionInputs) -> list[VisualLayout]:
        """Where each request's images and videos go in its 1-D ids: its runs of image tokens
        and of video tokens, filled by the images and the videos of ``vision`` in order (a
        video may fill several runs, e.g. Qwen3-VL's frame pairs); a ValueError naming the
        request when they do not fit."""
        self.check_vision(vision)
        images = [find_visual_spans(ids, self.image_token_id) for ids in input_ids]
        videos = [find_visual_spans(ids, self.video_token_id) if self.video_token_id is not None
                  else () for ids in input_ids]
        for b, (own_images, own_videos) in enumerate(zip(images, videos)):
            if not own_images and not own_videos:
                raise ValueError(f"prompt {b} has 0 image tokens (id {self.image_token_id}); a "
                                 f"prompt holds at least one image")
        n_images = assign_media(images, self.image_token_counts(vision), self.image_token_id)
        n_videos = [0] * len(input_ids)
        if self.video_token_id is not None:
            n_videos = assign_media(videos, self.video_token_counts(vision), self.video_token_id,
                                    "videos")
        return layouts_of(images, videos, n_images, n_videos)

    def visual_features(self, vision: VisionInputs, layouts) -> list[torch.Tensor]:
        """Each request's visual tokens ``[n_visual, d]``, its images' and videos' features in
        slot order (the tower runs once per ``vision``)."""
        if vision.features is None:
            vision.features = self.image_features(vision)
        if vision.video_features is None:
            vision.video_features = self.video_features(vision)
        out, image, video = [], 0, 0
        for layout in layouts:
            images = vision.features[image:image + layout.n_images]
            videos = vision.video_features[video:video + layout.n_videos]
            image, video = image + layout.n_images, video + layout.n_videos
            out.append(layout.in_slot_order(images, videos))
        return out

    def embed(self, input_ids: torch.Tensor, features, layouts) -> torch.Tensor:
        """Token embeddings ``[B, T, d]`` of ``input_ids [B, T]`` with row ``b``'s visual tokens
        ``features[b] [n_visual, d]`` spliced in at the slots of ``layouts[b]``, in order."""
        h = self.decoder.embed_tokens[input_ids]  # indexing copies: the splice writes a copy
        for b, layout in enumerate(layouts):
            done = 0
            for span in layout.spans:
                h[b, span.start:span.start + span.length] = \
                    features[b][done:done + span.length].to(h.dtype)
                done += span.length
        return h

