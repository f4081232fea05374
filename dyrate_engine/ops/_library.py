"""Loads the compiled ``dyrate`` op library, or defines the same ops on the PyTorch references.

Either way ``torch.ops.dyrate.*`` exists with one schema, so the wrappers, torch.compile (through
the fake kernels) and C++ callers see the same ops. Set ``DYRATE_NO_EXTENSION=1`` to force the
reference path (the tests use it to prove the fallback works), or ``DYRATE_EXTENSION_PATH`` to
the file of another build of the extension to load it instead (``make sanitize`` loads its
AddressSanitizer build this way).
"""
from __future__ import annotations

import os
import warnings

import torch

# Must equal the schemas in csrc/ops.cpp (tests/test_library.py compares them).
SCHEMAS = {
    "attention_scores": "attention_scores(Tensor q, Tensor k_cache, Tensor lengths, "
    "Tensor vis_start, Tensor vis_len, Tensor prompt_len, float? scale, int max_vis, "
    "Tensor? vis_slots=None) -> (Tensor, Tensor)",
    "select_keep": "select_keep(Tensor scores, Tensor present, Tensor n_keep) -> Tensor",
    "compact_kv_": "compact_kv_(Tensor(a!) kv, Tensor(b!) lengths, Tensor vis_start, "
    "Tensor(c!) present, Tensor keep_mask, Tensor? vis_slots=None) -> ()",
    "decode_linear": "decode_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    "decode_attention": "decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, "
    "Tensor lengths, float? scale, int? window) -> Tensor",
    "decode_attention_monitor": "decode_attention_monitor(Tensor q, Tensor k_cache, "
    "Tensor v_cache, Tensor lengths, Tensor visual_rank, Tensor vis_start, Tensor prompt_len, "
    "float? scale, int max_vis) -> (Tensor, Tensor, Tensor)",
    "rms_norm": "rms_norm(Tensor x, Tensor weight, float eps) -> Tensor",
    "add_rms_norm": "add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) "
    "-> (Tensor, Tensor)",
    "silu_mul": "silu_mul(Tensor gate_up) -> Tensor",
    "rope": "rope(Tensor x, Tensor cos, Tensor sin) -> Tensor",
    "causal_attention": "causal_attention(Tensor q, Tensor k, Tensor v, float? scale) -> Tensor",
}


def _load_extension() -> str | None:
    """Import the extension; return why it is unavailable, or None when it loaded."""
    if os.environ.get("DYRATE_NO_EXTENSION") == "1":
        return "DYRATE_NO_EXTENSION=1"
    if os.environ.get("DYRATE_EXTENSION_PATH"):
        _load_extension_file(os.environ["DYRATE_EXTENSION_PATH"])
        return None
    try:
        from dyrate_engine import _C  # noqa: F401  (importing registers TORCH_LIBRARY(dyrate))
    except ImportError as error:
        return str(error)
    return None


def _load_extension_file(path: str) -> None:
    """Import the extension module built at ``path`` as ``dyrate_engine._C``; an error when it
    cannot be loaded (asking for a build and getting another would hide what is tested)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("dyrate_engine._C", path)
    if spec is None or not os.path.isfile(path):
        raise ImportError(f"DYRATE_EXTENSION_PATH={path!r} is not an extension module file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["dyrate_engine._C"] = module


_MISSING_REASON = _load_extension()
EXTENSION_LOADED = _MISSING_REASON is None
# Python-side registrations live as long as the process, like the C++ ones.
_DEF_LIB = None if EXTENSION_LOADED else torch.library.Library("dyrate", "DEF")
_IMPL_LIB = torch.library.Library("dyrate", "IMPL") if EXTENSION_LOADED else _DEF_LIB
_BACKENDS: dict[str, dict[str, str]] = {}

if not EXTENSION_LOADED:
    warnings.warn(
        "dyrate_engine: the C++ extension is not available "
        f"({_MISSING_REASON}); using the PyTorch reference ops, which are slower. "
        "Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def _has_kernel(name: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"dyrate::{name}", key)


def ensure_registered(name: str, reference, fake, cuda=None) -> None:
    """Give ``dyrate::name`` a kernel on every device and a fake kernel for tracing. ``cuda``: a
    CUDA implementation in Python (a Triton kernel's launcher) where no compiled one exists."""
    if _DEF_LIB is not None:
        _DEF_LIB.define(SCHEMAS[name])
        _DEF_LIB.impl(name, reference, "CompositeExplicitAutograd")
        if cuda is not None:
            _DEF_LIB.impl(name, cuda, "CUDA")
        _BACKENDS[name] = {"cpu": "reference", "cuda": "reference" if cuda is None else "triton"}
    else:
        backends = {}
        for key, python_impl in (("CPU", None), ("CUDA", cuda)):
            if _has_kernel(name, key):
                backends[key.lower()] = "extension"
                continue
            _IMPL_LIB.impl(name, python_impl or reference, key)
            backends[key.lower()] = "reference" if python_impl is None else "triton"
        _BACKENDS[name] = backends
    torch.library.register_fake(f"dyrate::{name}", fake, lib=_IMPL_LIB)


def cpu_isa() -> str:
    """The SIMD path of the C++ CPU kernels (``"avx512"``, ``"avx2"`` or ``"scalar"``; capped by
    the environment variable ``DYRATE_CPU_ISA``), or ``"reference"`` without the extension."""
    if not EXTENSION_LOADED:
        return "reference"
    from dyrate_engine import _C
    return _C.cpu_isa()


def backends() -> dict[str, dict[str, str]]:
    """Which implementation serves each op per device: ``"extension"``, ``"triton"`` or
    ``"reference"``."""
    return {name: dict(per_device) for name, per_device in _BACKENDS.items()}
