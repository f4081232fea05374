"""Rotary position embedding of Llama-family text models, identical to transformers' (NeoX
"rotate half" convention, fp32 angles), reusing transformers' own inverse-frequency functions."""
from __future__ import annotations

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

#: Types whose frequencies do not depend on the sequence length. ``dynamic`` and ``longrope``
#: change them with the batch's longest position in transformers; not supported yet.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


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


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float, dtype):
    """cos and sin ``[..., head_dim]`` for integer ``positions [...]``, computed in fp32."""
    freqs = positions[..., None].float() * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return (angles.cos() * scaling).to(dtype), (angles.sin() * scaling).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, heads, T, head_dim]`` by cos/sin ``[B, 1, T, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
