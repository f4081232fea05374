"""The exported predictor: ``predictor.safetensors`` (weights) and ``predictor.json`` (everything
needed to use it correctly). Loaded with safetensors only: an artifact is an untrusted file."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..deprecation import renamed_keyword
from .features import FeatureSpec
from .model import RatePredictor

FORMAT_VERSION = 1
WEIGHTS, META = "predictor.safetensors", "predictor.json"
_FINGERPRINT_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "vocab_size")


def model_fingerprint(text_config) -> str:
    """A short hash of the text model's shape: two checkpoints with the same shape share it."""
    get = text_config.get if isinstance(text_config, dict) else lambda k: getattr(text_config, k, None)
    shape = {k: get(k) for k in _FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def save_predictor(directory, predictor: RatePredictor, *, prune_layer: int | None = None,
                   text_config, training: dict | None = None, layer: int | None = None,
                   family: str | None = None) -> Path:
    """Write the artifact. ``prune_layer`` is K, the first pruned layer (monitor layer K-1);
    ``family`` the model family it was trained on (config.json's model_type, e.g. "llava");
    ``training`` records how it was made (data, lambda, steps, ...)."""
    from safetensors.torch import save_file

    prune_layer = renamed_keyword("save_predictor", "layer", "prune_layer", layer, prune_layer)
    if prune_layer is None:
        raise TypeError("save_predictor() needs prune_layer (K, the first pruned layer)")

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()},
              directory / WEIGHTS)
    get = text_config.get if isinstance(text_config, dict) else lambda k: getattr(text_config, k)
    meta = {
        "format_version": FORMAT_VERSION,
        "rates": list(predictor.rates),
        "features": predictor.spec.to_dict(),
        "prune_layer": prune_layer,
        "monitor_layer": prune_layer - 1,
        "n_heads": get("num_attention_heads"),
        "n_layers": get("num_hidden_layers"),
        "model_fingerprint": model_fingerprint(text_config),
        "family": family,
        "training": training or {},
    }
    (directory / META).write_text(json.dumps(meta, indent=1))
    return directory


def load_predictor(directory) -> tuple[RatePredictor, dict]:
    """``(predictor, meta)`` from an artifact directory; a clear error naming the file (and the
    field) for a missing, damaged or mistyped part."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS, META):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a predictor artifact: {name} is missing")
    meta = read_meta(directory / META)
    try:
        spec = FeatureSpec.from_dict(meta["features"])
        predictor = RatePredictor(spec.n_heads, meta["rates"], spec.step_scale)
    except ValueError as error:
        raise ValueError(f"{directory / META}: {error}") from None
    try:
        state = load_file(directory / WEIGHTS)
    except SafetensorError as error:
        raise ValueError(f"{directory / WEIGHTS}: not a readable safetensors file ({error})") \
            from None
    expected = {k: v.shape for k, v in predictor.state_dict().items()}
    got = {k: v.shape for k, v in state.items()}
    if got != expected:
        raise ValueError(f"{directory / WEIGHTS}: weights {got} do not match predictor.json "
                         f"{expected}")
    predictor.load_state_dict(state)
    return predictor.eval(), meta


# predictor.json's fields: name -> (the types it may have, whether it must be present).
_INT, _NUMBER = (int,), (int, float)
_FIELDS = {"format_version": (_INT, True), "rates": ((list,), True), "features": ((dict,), True),
           "prune_layer": (_INT, True), "monitor_layer": (_INT, True), "n_heads": (_INT, True),
           "n_layers": (_INT, True), "model_fingerprint": ((str,), False),
           "family": ((str, type(None)), False), "training": ((dict,), False)}
_FEATURE_FIELDS = {"n_heads": (_INT, True), "step_scale": (_NUMBER, True)}


def read_meta(path: Path) -> dict:
    """``predictor.json`` parsed and checked: every field present with its type, the format
    version supported; a ValueError naming the file and the field otherwise."""
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: predictor format {meta.get('format_version')!r} is not "
                         f"supported (expected {FORMAT_VERSION})")
    _check_fields(path, meta, _FIELDS, "")
    _check_fields(path, meta["features"], _FEATURE_FIELDS, "features.")
    for i, rate in enumerate(meta["rates"]):
        if isinstance(rate, bool) or not isinstance(rate, _NUMBER):
            raise ValueError(f"{path}: field 'rates[{i}]' must be a number, got {rate!r}")
    if meta["prune_layer"] < 1 or meta["monitor_layer"] != meta["prune_layer"] - 1:
        raise ValueError(f"{path}: field 'prune_layer' must be >= 1 with 'monitor_layer' one "
                         f"below it, got {meta['prune_layer']!r} and {meta['monitor_layer']!r}")
    return meta


def _check_fields(path: Path, meta: dict, fields: dict, prefix: str) -> None:
    for name, (types, required) in fields.items():
        if name not in meta:
            if required:
                raise ValueError(f"{path}: field '{prefix}{name}' is missing")
            continue
        value = meta[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{path}: field '{prefix}{name}' must be {wanted}, got "
                             f"{type(value).__name__} {value!r:.40}")


def check_family(meta: dict, family: str, source="the predictor") -> None:
    """Raise if the artifact was trained on another model family than ``family`` (the attention
    over token types differs between families even at one text shape). Artifacts that do not
    record their family are accepted."""
    trained = meta.get("family")
    if trained and family and trained != family:
        raise ValueError(f"{source} was trained on a {trained!r} model; this is a {family!r} "
                         f"model: train one for it with dyrate train-predictor")


def check_compatible(meta: dict, text_config, source="the predictor") -> None:
    """Raise if the artifact was trained for another layer or head count than ``text_config``."""
    heads, layers = text_config.num_attention_heads, text_config.num_hidden_layers
    if meta["n_heads"] != heads or meta["n_layers"] != layers:
        raise ValueError(f"{source} was trained for a model with {meta['n_layers']} layers and "
                         f"{meta['n_heads']} attention heads; this model has {layers} layers and "
                         f"{heads} heads")
    if meta["prune_layer"] >= layers:
        raise ValueError(f"{source} prunes from layer {meta['prune_layer']}, but this model has "
                         f"only {layers} layers")
