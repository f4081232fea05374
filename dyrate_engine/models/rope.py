"""Rotary position embedding of Llama-family text models, identical to transformers' (NeoX
"rotate half" convention, fp32 angles), reusing transformers' own inverse-frequency functions.

The Qwen-VL text models use M-RoPE: a token has three positions (time, height, width; equal for
text), and each band of the head dimension's frequencies rotates by one of them. Qwen2-VL and
Qwen2.5-VL give the bands in three contiguous sections (``mrope_section``); Qwen3-VL interleaves
them (t, h, w, t, h, w, ...). Pruned visual tokens keep their three positions, as pruned tokens
keep their one position under 1-D RoPE."""
from __future__ import annotations

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

#: Types whose frequencies do not depend on the sequence length. ``dynamic`` and ``longrope``
#: change them with the batch's longest position in transformers; not supported yet.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
#: M-RoPE text models and their default sections (transformers' defaults when the config has none).
MROPE_DEFAULT_SECTIONS = {"qwen2_vl_text": [16, 24, 24], "qwen2_5_vl_text": [16, 24, 24],
                          "qwen3_vl_text": [24, 20, 20]}


def mrope_layout(text_config) -> tuple[list[int], bool] | None:
    """``(mrope_section, interleaved)`` of an M-RoPE text model, None for 1-D RoPE."""
    default = MROPE_DEFAULT_SECTIONS.get(text_config.model_type)
    if default is None:
        return None
    params = getattr(text_config, "rope_parameters", None) or {}
    return list(params.get("mrope_section", default)), text_config.model_type == "qwen3_vl_text"


def rope_parameters(text_config) -> tuple[torch.Tensor, float]:
    """``(inv_freq fp32 [head_dim // 2], attention_scaling)`` of a transformers text config."""
    params = getattr(text_config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "default":
        head_dim = getattr(text_config, "head_dim", None) or (
            text_config.hidden_size // text_config.num_attention_heads)
        theta = params.get("rope_theta", 10000.0)
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv_freq, 1.0
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](text_config, None)
    return inv_freq.float(), float(scaling)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float, dtype,
                 mrope: tuple[list[int], bool] | None = None):
    """cos and sin ``[..., head_dim]`` for integer ``positions [...]`` (``[3, ...]`` with
    ``mrope``, see :func:`mrope_layout`), computed in fp32."""
    freqs = positions[..., None].float() * inv_freq
    if mrope is not None:
        freqs = _mrope_bands(freqs, *mrope)
    angles = torch.cat((freqs, freqs), dim=-1)
    return (angles.cos() * scaling).to(dtype), (angles.sin() * scaling).to(dtype)


def _mrope_bands(freqs: torch.Tensor, section: list[int], interleaved: bool) -> torch.Tensor:
    """``[..., hd / 2]`` frequencies of a token from its time / height / width ones
    ``[3, ..., hd / 2]``: each band takes the axis it belongs to."""
    if not interleaved:
        bands = freqs.split(section, dim=-1)
        return torch.cat([band[i % 3] for i, band in enumerate(bands)], dim=-1)
    out = freqs[0].clone()
    for axis in (1, 2):  # time keeps every third band from 0; height from 1, width from 2
        band = slice(axis, section[axis] * 3, 3)
        out[..., band] = freqs[axis, ..., band]
    return out
