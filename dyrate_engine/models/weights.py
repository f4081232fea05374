"""Loads a checkpoint's weights through transformers, from safetensors files only, and refuses a
checkpoint that does not hold exactly the model its config describes: a damaged file, a missing
tensor or one of another shape is a clear error naming the file or the tensor, never a model that
runs on randomly initialised weights."""
from __future__ import annotations

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


def load_weights(hf_class, path: Path, dtype: torch.dtype):
    """``hf_class.from_pretrained(path)`` with safetensors only; a ValueError when a tensor the
    model needs is missing from the files or has another shape than the config makes it."""
    check_weight_files(path)
    model, info = hf_class.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                           output_loading_info=True, ignore_mismatched_sizes=True)
    problems = [f"tensor {name!r} is {list(got)} in the checkpoint but {list(want)} in the model "
                f"its config.json describes" for name, got, want in info["mismatched_keys"]]
    problems += [f"tensor {name!r} is missing" for name in sorted(info["missing_keys"])]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{path}: the weights do not match the model: "
                         f"{'; '.join(problems[:3])}{more}")
    return model
