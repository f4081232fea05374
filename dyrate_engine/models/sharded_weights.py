"""Reads one tensor-parallel rank's shard of the text decoder's layers straight from the
checkpoint's safetensors files, through ``safe_open(...).get_slice``, so a rank never holds more of
those layers than its shard (the rest of the model, replicated, loads through transformers)."""
from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from .llama import LayerWeights, fused_rows
from .weights import check_weight_files

# The text decoder's first layer, under whatever prefix the checkpoint uses (transformers' own,
# "model.language_model.", or an older "language_model.model." / "model."); no vision tower has
# an input_layernorm.
_FIRST_TEXT_LAYER = re.compile(r"^(.*)layers\.0\.input_layernorm\.weight$")


@dataclass
class ShardPlan:
    """What rank ``rank`` keeps: rows of q (its heads), of k and v (its KV heads), and of gate
    and up (its MLP channels), the same slices as columns of o and down."""

    rank: int
    q_rows: slice
    kv_rows: slice
    channels: slice


class _Checkpoint:
    """The tensors of a checkpoint's safetensors files by name, read whole or in slices."""

    def __init__(self, path: Path, dtype: torch.dtype, device):
        from safetensors import safe_open

        self.dtype, self.device = dtype, device
        self._files = ExitStack()
        self._where = {}
        for file in check_weight_files(path):
            handle = self._files.enter_context(safe_open(file, framework="pt"))
            self._where.update({name: handle for name in handle.keys()})
        prefixes = [m.group(1) for m in map(_FIRST_TEXT_LAYER.match, self._where) if m]
        if len(prefixes) != 1:
            self._files.close()
            raise ValueError(f"{path}: cannot find the text decoder's layers in the weights "
                             f"(layers.0.input_layernorm.weight under {prefixes or 'no'} prefix)")
        self.prefix = prefixes[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._files.close()

    def has(self, name: str) -> bool:
        return self.prefix + name in self._where

    def read(self, name: str, rows: slice = slice(None), cols: slice | None = None):
        """Tensor ``name`` (under the text prefix), only ``rows`` (or ``cols`` of a matrix)."""
        key = self.prefix + name
        if key not in self._where:
            raise ValueError(f"tensor {key!r} is missing from the checkpoint")
        part = self._where[key].get_slice(key)
        tensor = part[rows] if cols is None else part[:, cols]
        return tensor.to(device=self.device, dtype=self.dtype).contiguous()


def read_text_layers(path: Path, n_layers: int, plan: ShardPlan, windows: list, dtype, device
                     ) -> list[LayerWeights]:
    """The ``n_layers`` decoder layers of the checkpoint in ``path``, rank ``plan.rank``'s shard
    of each; ``windows``: each layer's sliding window (or None)."""
    with _Checkpoint(path, dtype, device) as checkpoint:
        return [_read_layer(checkpoint, f"layers.{i}.", plan, windows[i]) for i in range(n_layers)]


def _read_layer(ckpt: _Checkpoint, layer: str, plan: ShardPlan, window) -> LayerWeights:
    def rows(name, pick):  # a column-parallel linear's weight and bias rows
        bias = ckpt.read(f"{name}.bias", pick) if ckpt.has(f"{name}.bias") else None
        return ckpt.read(f"{name}.weight", pick), bias

    def cols(name):  # a row-parallel linear: input columns; its bias added once, by rank 0
        pick = plan.q_rows if name.endswith("o_proj") else plan.channels
        bias = ckpt.read(f"{name}.bias") if plan.rank == 0 and ckpt.has(f"{name}.bias") else None
        return ckpt.read(f"{name}.weight", cols=pick), bias

    attn, mlp = layer + "self_attn.", layer + "mlp."
    qkv, qkv_bias, (q, k, v) = fused_rows([rows(attn + "q_proj", plan.q_rows),
                                       rows(attn + "k_proj", plan.kv_rows),
                                       rows(attn + "v_proj", plan.kv_rows)])
    gate_up, gate_up_bias, (_, up) = fused_rows([rows(mlp + "gate_proj", plan.channels),
                                             rows(mlp + "up_proj", plan.channels)])
    (o, o_bias), (down, down_bias) = cols(attn + "o_proj"), cols(mlp + "down_proj")
    norm = lambda name: ckpt.read(name) if ckpt.has(name) else None  # noqa: E731
    return LayerWeights(
        qkv=qkv, qkv_bias=qkv_bias, gate_up=gate_up, gate_up_bias=gate_up_bias,
        input_norm=ckpt.read(layer + "input_layernorm.weight"), q=q, k=k, v=v, o=o,
        post_norm=ckpt.read(layer + "post_attention_layernorm.weight"), up=up, down=down,
        o_bias=o_bias, down_bias=down_bias, sliding_window=window,
        q_norm=norm(attn + "q_norm.weight"), k_norm=norm(attn + "k_norm.weight"))
