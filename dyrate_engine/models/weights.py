"""Loads a checkpoint's weights through transformers, from safetensors files only, and refuses a
checkpoint that does not hold exactly the model its config describes: a damaged file, a missing
tensor or one of another shape is a clear error naming the file or the tensor, never a model that
runs on randomly initialised weights."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch


def check_weight_files(path: Path) -> list[Path]:
    """The checkpoint's ``*.safetensors`` files, each header read (a truncated or non-safetensors
    file fails here, named); a ValueError when there is none (pickled weights are never read)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors weight files (weights are read from "
                         f"safetensors only; pickled .bin / .pt files are never loaded)")
    for file in files:
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{file}: not a readable safetensors file ({error})") from None
    return files


def load_weights(hf_class, path: Path, dtype: torch.dtype, *, text_layers: bool = True):
    """``hf_class.from_pretrained(path)`` with safetensors only; a ValueError when a tensor the
    model needs is missing from the files or has another shape than the config makes it.
    ``text_layers=False`` leaves the text model's layers out (never read; the config still
    counts them), for a tensor-parallel rank that reads only its shard of them."""
    check_weight_files(path)
    config, real_layers = (None, None) if text_layers else _without_text_layers(hf_class, path)
    with _quiet_transformers(not text_layers):  # the skipped layers would be listed as unused
        model, info = hf_class.from_pretrained(
            path, config=config, dtype=dtype, use_safetensors=True, output_loading_info=True,
            ignore_mismatched_sizes=True)
    if real_layers is not None:  # the config tells the truth again; the model has no layers
        text = model.config.text_config
        text.num_hidden_layers, text.layer_types = real_layers
    problems = [f"tensor {name!r} is {list(got)} in the checkpoint but {list(want)} in the model "
                f"its config.json describes" for name, got, want in info["mismatched_keys"]]
    problems += [f"tensor {name!r} is missing" for name in sorted(info["missing_keys"])]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{path}: the weights do not match the model: "
                         f"{'; '.join(problems[:3])}{more}")
    return model


def _without_text_layers(hf_class, path: Path):
    """The checkpoint's config with a text model of no layers, and the real ``(count, kinds)``
    of its layers."""
    config = hf_class.config_class.from_pretrained(path)
    text = config.text_config
    real_layers = (text.num_hidden_layers, getattr(text, "layer_types", None))
    text.num_hidden_layers = 0
    if real_layers[1] is not None:
        text.layer_types = []
    return config, real_layers


@contextmanager
def _quiet_transformers(quiet: bool):
    from transformers.utils import logging

    level = logging.get_verbosity()
    if quiet:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
