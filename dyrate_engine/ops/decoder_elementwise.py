"""The decoder's elementwise ops, one pass over the activations each: ``rms_norm``,
``add_rms_norm`` (the residual add, then RMSNorm), ``silu_mul`` and ``rope``.

Their references are the compositions transformers computes for Llama-family layers (RMSNorm in
fp32 then cast; RoPE in the NeoX "rotate half" form; SiLU-gated MLP), and the C++ CPU kernels
round every intermediate where these do, so the two differ only in the order of the RMS sum of
squares and in silu's exp (last bits). On CUDA the references serve. The backward of each op
recomputes its reference under autograd: the predictor's training backpropagates through the
frozen decoder, which then runs the same forward kernels as inference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._library import ensure_registered
from ._validate import check_rms_norm, check_rope, check_silu_mul


def rms_norm_reference(x, weight, eps):
    """transformers' Llama RMSNorm: fp32 statistics, the normalised value cast back, then
    scaled by ``weight``."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm_reference(x, residual, weight, eps):
    hidden = x + residual
    return hidden, rms_norm_reference(hidden, weight, eps)


def silu_mul_reference(gate_up):
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rope_reference(x, cos, sin):
    """``x [B, T, heads, hd]`` rotated by ``cos``/``sin [B, T, hd]``, returned as
    ``[B, heads, T, hd]`` (contiguous)."""
    x = x.transpose(1, 2)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos[:, None] + rotated * sin[:, None]).contiguous()


def _fake_rope(x, cos, sin):
    B, T, n, hd = x.shape
    return x.new_empty((B, n, T, hd))


ensure_registered("rms_norm", rms_norm_reference, lambda x, weight, eps: torch.empty_like(x))
ensure_registered("add_rms_norm", add_rms_norm_reference,
                  lambda x, residual, weight, eps: (torch.empty_like(x), torch.empty_like(x)))
ensure_registered("silu_mul", silu_mul_reference,
                  lambda gate_up: gate_up.new_empty((*gate_up.shape[:-1], gate_up.shape[-1] // 2)))
ensure_registered("rope", rope_reference, _fake_rope)


def _recomputing_backward(reference, n_tensors):
    """An autograd formula that differentiates ``reference`` at the saved inputs: the first
    ``n_tensors`` arguments are tensors, the rest (eps) constants."""
    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.constants = inputs[n_tensors:]

    def backward(ctx, *grads):
        wanted = ctx.needs_input_grad[:n_tensors]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(w) for t, w in zip(ctx.saved_tensors, wanted)]
            outputs = reference(*inputs, *ctx.constants)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
            leaves = [t for t in inputs if t.requires_grad]
            found = iter(torch.autograd.grad([o for o, _ in pairs], leaves,
                                             [g for _, g in pairs], allow_unused=True))
        return (*(next(found) if w else None for w in wanted),
                *(None for _ in ctx.constants))

    return backward, setup


for _name, _reference, _n in (("rms_norm", rms_norm_reference, 2),
                              ("add_rms_norm", add_rms_norm_reference, 3),
                              ("silu_mul", silu_mul_reference, 1),
                              ("rope", rope_reference, 3)):
    _backward, _setup = _recomputing_backward(_reference, _n)
    torch.library.register_autograd(f"dyrate::{_name}", _backward, setup_context=_setup)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x [..., d]`` (fp32 statistics), scaled by
    ``weight [d]`` of x's dtype; equals :func:`rms_norm_reference` up to the sum's order."""
    check_rms_norm("rms_norm", x, weight)
    return torch.ops.dyrate.rms_norm(x, weight, eps)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + residual, rms_norm(x + residual))``: a layer's residual add and the next norm in
    one pass."""
    check_rms_norm("add_rms_norm", x, weight, residual)
    return torch.ops.dyrate.add_rms_norm(x, residual, weight, eps)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of a fused gate/up projection ``[..., 2F]`` (gate first): ``[..., F]``."""
    check_silu_mul(gate_up)
    return torch.ops.dyrate.silu_mul(gate_up)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x [B, T, heads, hd]`` (any strides but a contiguous head dim, e.g. a
    view of the fused q/k/v projection) by ``cos``/``sin [B, T, hd]``, into the attention layout
    ``[B, heads, T, hd]``, contiguous."""
    check_rope(x, cos, sin)
    return torch.ops.dyrate.rope(x, cos, sin)
