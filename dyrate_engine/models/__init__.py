"""The models the engine runs: one adapter per vision-language family (``base.VisionLanguageModel``,
``llava.LlavaModel``), our own text decoder (``llama``), RoPE and the decoder's exact FLOPs.

:func:`load_model` reads a checkpoint's ``config.json`` and picks the family by its ``model_type``.
"""
from __future__ import annotations

import json

from ..bundled import resolve_model
from .base import VisionLanguageModel
from .layout import VisualLayout, VisualSpan
from .llama import SUPPORTED_TEXT_MODELS
from .llava import LlavaModel
from .llava_next import LlavaNextModel, LlavaOnevisionModel
from .pooled import PooledGrid
from .qwen_vl import Qwen2_5VLModel, Qwen2VLModel, Qwen3VLModel

#: The families by config.json ``model_type``.
FAMILIES: dict[str, type[VisionLanguageModel]] = {
    m.family: m for m in (LlavaModel, LlavaNextModel, LlavaOnevisionModel, Qwen2VLModel,
                          Qwen2_5VLModel, Qwen3VLModel)}


def load_model(path, device="cpu", dtype=None, *, max_seq_len: int | None = None,
               text_layers: bool = True) -> VisionLanguageModel:
    """The checkpoint in the local directory ``path`` (or ``"demo"``, the bundled demo model)
    with the adapter of its family. ``dtype`` defaults to fp32; ``max_seq_len`` (prompt plus new
    tokens) to the text model's ``max_position_embeddings``. Weights load from safetensors only.
    ``text_layers=False`` leaves the text decoder's layers out (``sharding.shard_model``)."""
    path = resolve_model(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a checkpoint directory (no config.json)")
    try:
        config = json.loads(config_file.read_text())
        model_type = config["model_type"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{config_file}: not a model config ({error!r})") from None
    family = FAMILIES.get(model_type)
    if family is None:
        supported = ", ".join(repr(name) for name in FAMILIES)
        raise ValueError(f"{path} holds a {model_type!r} model; supported: {supported} (with a "
                         f"{', '.join(SUPPORTED_TEXT_MODELS)} text model)")
    return family.load(path, config, device=device, dtype=dtype, max_seq_len=max_seq_len,
                       text_layers=text_layers)


__all__ = ["FAMILIES", "VisionLanguageModel", "VisualLayout", "VisualSpan", "LlavaModel",
           "PooledGrid", "LlavaNextModel", "LlavaOnevisionModel", "Qwen2VLModel", "Qwen2_5VLModel",
           "Qwen3VLModel", "load_model"]
