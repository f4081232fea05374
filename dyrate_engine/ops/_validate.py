"""Argument checks of the op wrappers, with messages that name the offending argument.

Shape, dtype and device checks read no tensor data and always run. Value checks (index ranges,
NaN scores) read the data, which is a device sync on CUDA, so the wrappers make them only with
``validate=True`` (the default). The CPU kernels repeat the checks that guard memory, so a C++
caller is protected too; the CUDA kernels clamp instead of raising.

Index tensors (lengths, spans, ``n_keep``, slot tables) may be int32, what flash-attn and
FlashInfer use for lengths, or int64: the wrappers widen int32 to the kernels' int64 with
:func:`as_int64` (a small copy on the device, no sync).
"""
from __future__ import annotations

import torch

from ._slots import current_slots, visual_slot_table

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)


def as_int64(t: torch.Tensor | None) -> torch.Tensor | None:
    """An index tensor as the kernels' int64 (itself when it already is)."""
    return t if t is None or t.dtype == torch.int64 else t.long()


def _fail(op: str, message: str) -> None:
    raise ValueError(f"dyrate.{op}: {message}")


def _check_index_vector(op, name, t, batch, device):
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] != batch:
        _fail(op, f"{name} must be a tensor of shape [{batch}], got {getattr(t, 'shape', type(t))}")
    if t.dtype not in INDEX_DTYPES:
        _fail(op, f"{name} must be int32 or int64, got {t.dtype}")
    if t.device != device:
        _fail(op, f"{name} is on {t.device} but the data is on {device}")


def _check_float(op, name, t):
    if t.dtype not in FLOAT_DTYPES:
        _fail(op, f"{name} must be float32, bfloat16 or float16, got {t.dtype}")


def _check_head_dim(op, **tensors):
    """The attention kernels walk the head dim as contiguous memory; any other stride is fine."""
    for name, t in tensors.items():
        if t.stride(-1) != 1:
            _fail(op, f"{name} needs a contiguous head dim, got strides {tuple(t.stride())}")


def _first_bad(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def _check_slot_table(op, vis_slots, batch, width, device):
    """Metadata of an optional ``vis_slots`` table: integer ``[batch, >= width]`` on ``device``."""
    if vis_slots is None:
        return
    if not isinstance(vis_slots, torch.Tensor) or vis_slots.dim() != 2 \
            or vis_slots.shape[0] != batch or vis_slots.shape[1] < width:
        _fail(op, f"vis_slots must be a tensor of shape [{batch}, >= {width}], got "
                  f"{getattr(vis_slots, 'shape', type(vis_slots))}")
    if vis_slots.dtype not in INDEX_DTYPES:
        _fail(op, f"vis_slots must be int32 or int64, got {vis_slots.dtype}")
    if vis_slots.device != device:
        _fail(op, f"vis_slots is on {vis_slots.device} but the data is on {device}")


def _slot_checks(slots, real, vis_start, end, what, end_name):
    """Value checks of the visual tokens' ``slots`` where ``real``: strictly increasing, the
    first at ``vis_start`` (when given), all in ``[0, end)``."""
    masked = torch.where(real, slots, -1)
    previous = torch.cummax(masked, dim=1).values[:, :-1]  # the largest real slot before each
    repeated = real[:, 1:] & (slots[:, 1:] <= previous)
    checks = [(repeated.any(1), f"{what} must be strictly increasing"),
              (((slots < 0) & real).any(1), f"{what} must be >= 0"),
              (((slots >= end[:, None]) & real).any(1), f"{what} must be below {end_name}")]
    if vis_start is not None and slots.shape[1]:
        checks.append(((slots[:, 0] != vis_start) & real[:, 0],
                       "vis_slots[b, 0] must equal vis_start[b]"))
    return checks


def check_attention_scores(q, k_cache, lengths, vis_start, vis_len, prompt_len, max_vis, vis_slots,
                           validate):
    op = "attention_scores"
    if q.dim() != 3:
        _fail(op, f"q must be [B, H, D], got {tuple(q.shape)}")
    if k_cache.dim() != 4:
        _fail(op, f"k_cache must be [B, Hkv, Cap, D], got {tuple(k_cache.shape)}")
    _check_float(op, "q", q)
    _check_float(op, "k_cache", k_cache)
    B, H, D = q.shape
    if k_cache.device != q.device:
        _fail(op, f"q is on {q.device} but k_cache is on {k_cache.device}")
    if k_cache.shape[0] != B or k_cache.shape[3] != D:
        _fail(op, f"k_cache {tuple(k_cache.shape)} does not match q {tuple(q.shape)}")
    if k_cache.shape[1] == 0 or H % k_cache.shape[1]:
        _fail(op, f"query heads ({H}) must be a multiple of key heads ({k_cache.shape[1]})")
    _check_head_dim(op, q=q, k_cache=k_cache)
    for name, t in (("lengths", lengths), ("vis_start", vis_start), ("vis_len", vis_len),
                    ("prompt_len", prompt_len)):
        _check_index_vector(op, name, t, B, q.device)
    if max_vis < 0:
        _fail(op, f"max_vis must be >= 0, got {max_vis}")
    _check_slot_table(op, vis_slots, B, max_vis, q.device)
    if not validate:
        return
    cap = k_cache.shape[2]
    checks = [
        (vis_start < 0, "vis_start must be >= 0"),
        (vis_len < 0, "vis_len must be >= 0"),
        (vis_len > max_vis, f"vis_len must be <= max_vis ({max_vis})"),
        (prompt_len > lengths, "prompt_len must be <= lengths"),
        (lengths > cap, f"lengths must be <= the cache capacity ({cap})"),
    ]
    if vis_slots is None:
        checks.insert(3, (vis_start + vis_len > prompt_len,
                          "vis_start + vis_len must be <= prompt_len"))
    else:  # vis_start also ends the system run, with or without visual tokens
        checks.insert(3, (vis_start > prompt_len, "vis_start must be <= prompt_len"))
        slots, real = visual_slot_table(vis_start, vis_len, vis_slots, max_vis)
        checks += _slot_checks(slots, real, vis_start, prompt_len, "vis_slots", "prompt_len")
    for bad, message in checks:
        if bool(bad.any()):
            _fail(op, f"{message} (sequence {_first_bad(bad)})")


def check_select_keep(scores, present, n_keep, validate):
    op = "select_keep"
    if scores.dim() != 2:
        _fail(op, f"scores must be [B, Nv], got {tuple(scores.shape)}")
    _check_float(op, "scores", scores)
    if present.dtype != torch.bool or present.shape != scores.shape:
        _fail(op, f"present must be bool shaped like scores {tuple(scores.shape)}, "
                  f"got {present.dtype} {tuple(present.shape)}")
    if present.device != scores.device:
        _fail(op, f"present is on {present.device} but scores is on {scores.device}")
    _check_index_vector(op, "n_keep", n_keep, scores.shape[0], scores.device)
    if not validate:
        return
    if bool((torch.isnan(scores) & present).any()):
        _fail(op, f"NaN score of a present visual token (sequence "
                  f"{_first_bad((torch.isnan(scores) & present).any(1))})")
    bad = (n_keep < 0) | (n_keep > present.sum(1))
    if bool(bad.any()):
        _fail(op, f"n_keep must be in [0, number of present tokens] (sequence {_first_bad(bad)})")


def check_compact_kv(kv, lengths, vis_start, present, keep_mask, vis_slots, validate):
    op = "compact_kv_"
    if kv.dim() != 6 or kv.shape[1] != 2:
        _fail(op, f"kv must be [L, 2, B, Hkv, Cap, D], got {tuple(kv.shape)}")
    if not kv.is_contiguous():
        _fail(op, "kv must be contiguous")
    B, cap = kv.shape[2], kv.shape[4]
    for name, t in (("present", present), ("keep_mask", keep_mask)):
        if t.dtype != torch.bool or t.dim() != 2 or t.shape[0] != B:
            _fail(op, f"{name} must be bool [{B}, Nv], got {t.dtype} {tuple(t.shape)}")
        if t.device != kv.device:
            _fail(op, f"{name} is on {t.device} but kv is on {kv.device}")
        if not t.is_contiguous():
            _fail(op, f"{name} must be contiguous")
    if keep_mask.shape != present.shape:
        _fail(op, f"keep_mask {tuple(keep_mask.shape)} must be shaped like present "
                  f"{tuple(present.shape)}")
    for name, t in (("lengths", lengths), ("vis_start", vis_start)):
        _check_index_vector(op, name, t, B, kv.device)
    if not lengths.is_contiguous():
        _fail(op, "lengths must be contiguous")
    _check_slot_table(op, vis_slots, B, present.shape[1], kv.device)
    if vis_slots is not None and vis_slots.shape[1] != present.shape[1]:
        _fail(op, f"vis_slots must be [{B}, {present.shape[1]}] like present, got "
                  f"{tuple(vis_slots.shape)}")
    if not validate:
        return
    checks = [
        (lengths > cap, f"lengths must be <= the cache capacity ({cap})"),
        ((keep_mask & ~present).any(1), "keep_mask may only keep present tokens"),
    ]
    if vis_slots is None:
        checks += [(vis_start < 0, "vis_start must be >= 0"),
                   (vis_start + present.sum(1) > lengths,
                    "the visual span (vis_start + present tokens) must end within lengths")]
    else:
        checks += _slot_checks(current_slots(vis_start, present, vis_slots), present, None,
                               lengths, "the present visual tokens' slots", "lengths")
    for bad, message in checks:
        if bool(bad.any()):
            _fail(op, f"{message} (sequence {_first_bad(bad)})")


def check_decode_linear(x, weight, bias):
    op = "decode_linear"
    if x.dim() < 1:
        _fail(op, "x must have at least one dimension")
    _check_float(op, "x", x)
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        _fail(op, f"weight must be [N, {x.shape[-1]}], got {tuple(weight.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            _fail(op, f"{name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        _fail(op, f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def check_decode_attention(op, q, k_cache, v_cache, lengths, visual_rank=None, vectors=(),
                           window=None):
    """Metadata checks of ``decode_attention`` and its monitor variant (no data is read: the
    decode step must not sync)."""
    if window is not None and window < 1:
        _fail(op, f"window must be >= 1 (keys per query), got {window}")
    if q.dim() != 3:
        _fail(op, f"q must be [B, H, D], got {tuple(q.shape)}")
    B, H, D = q.shape
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dim() != 4 or t.shape[0] != B or t.shape[3] != D or t.shape[:3] != k_cache.shape[:3]:
            _fail(op, f"{name} must be [{B}, Hkv, Cap, {D}] like k_cache, got {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            _fail(op, f"{name} must have q's dtype and device ({q.dtype}, {q.device}), got "
                      f"{t.dtype} on {t.device}")
    _check_float(op, "q", q)
    _check_head_dim(op, k_cache=k_cache, v_cache=v_cache, q=q)
    if H % k_cache.shape[1]:
        _fail(op, f"query heads ({H}) must be a multiple of key heads ({k_cache.shape[1]})")
    _check_index_vector(op, "lengths", lengths, B, q.device)
    for name, t in zip(("vis_start", "prompt_len"), vectors):
        _check_index_vector(op, name, t, B, q.device)
    if visual_rank is not None and (visual_rank.shape != (B, k_cache.shape[2])
                                    or visual_rank.dtype not in INDEX_DTYPES
                                    or visual_rank.device != q.device):
        _fail(op, f"visual_rank must be int32 or int64 [{B}, {k_cache.shape[2]}] on {q.device}, "
                  f"got {visual_rank.dtype} {tuple(visual_rank.shape)} on {visual_rank.device}")


def check_rms_norm(op, x, weight, residual=None):
    _check_float(op, "x", x)
    if x.dim() < 1:
        _fail(op, "x must have at least one dimension")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        _fail(op, f"weight must be [{x.shape[-1]}], got {tuple(weight.shape)}")
    for name, t in (("weight", weight), ("residual", residual)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            _fail(op, f"{name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}")
    if residual is not None and residual.shape != x.shape:
        _fail(op, f"residual must be like x {tuple(x.shape)}, got {tuple(residual.shape)}")


def check_silu_mul(gate_up):
    _check_float("silu_mul", "gate_up", gate_up)
    if gate_up.dim() < 1 or gate_up.shape[-1] % 2:
        _fail("silu_mul", "gate_up's last dimension must be even (gate then up), got "
                          f"{tuple(gate_up.shape)}")


def check_rope(x, cos, sin):
    op = "rope"
    _check_float(op, "x", x)
    if x.dim() != 4 or x.shape[3] % 2:
        _fail(op, f"x must be [B, T, heads, head_dim] with an even head_dim, got {tuple(x.shape)}")
    if x.stride(3) != 1:
        _fail(op, "x's head dimension must be contiguous")
    B, T, _, hd = x.shape
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (B, T, hd) or t.dtype != x.dtype or t.device != x.device:
            _fail(op, f"{name} must be {x.dtype} [{B}, {T}, {hd}] on {x.device}, got {t.dtype} "
                      f"{tuple(t.shape)} on {t.device}")
        if t.stride(2) != 1:
            _fail(op, f"{name} must be contiguous in head_dim")


def check_causal_attention(op, q, k, v):
    """Metadata checks of ``causal_attention``."""
    if q.dim() != 4:
        _fail(op, f"q must be [B, H, T, D], got {tuple(q.shape)}")
    B, H, T, D = q.shape
    _check_float(op, "q", q)
    for name, t in (("k", k), ("v", v)):
        if t.dim() != 4 or t.shape[0] != B or t.shape[3] != D or t.shape != k.shape:
            _fail(op, f"{name} must be [{B}, Hkv, S, {D}] like k, got {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            _fail(op, f"{name} must have q's dtype and device ({q.dtype}, {q.device}), got "
                      f"{t.dtype} on {t.device}")
    if D == 0:
        _fail(op, "the head dim must not be empty")
    _check_head_dim(op, q=q, k=k, v=v)
    if k.shape[1] == 0 or H % k.shape[1]:
        _fail(op, f"query heads ({H}) must be a multiple of key heads ({k.shape[1]})")
    if k.shape[2] < T:
        _fail(op, f"{T} queries need at least as many keys, got {k.shape[2]}")
