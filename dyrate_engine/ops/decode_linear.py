"""``decode_linear``: ``x @ weight.T + bias`` for the few rows of a decode step.

A decode step multiplies every weight matrix by one row per sequence. On the CPU, BLAS sgemm is
tuned for many rows and reaches a fraction of the weight bandwidth at 1-64 rows, so the decoder's
linears and LM head go through this op: its CPU kernel reads each weight row once for all rows of
the step (python_bench/RESULTS.md has the measurements). On CUDA it is ``F.linear`` (cuBLAS).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from ._library import ensure_registered
from ._validate import check_decode_linear


def decode_linear_reference(x, weight, bias):
    """``F.linear``: the reference, the fallback, and the CUDA path."""
    return F.linear(x, weight, bias)


def _fake(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


ensure_registered("decode_linear", decode_linear_reference, _fake)


def _save_for_backward(ctx, inputs, output):
    x, weight, bias = inputs
    # Like aten's linear: keep x only for the weight's gradient and the weight only for x's, so
    # a frozen decoder (predictor training) holds no activations for backward.
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                          weight if ctx.needs_input_grad[0] else None)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    """F.linear's gradients: the predictor's training backpropagates through the decoder."""
    x, weight = ctx.saved_tensors
    # Explicit row counts: reshape(-1, 0) of an empty tensor is ambiguous (N = 0 or K = 0).
    rows = grad.reshape(math.prod(grad.shape[:-1]), grad.shape[-1])
    grad_x = grad @ weight if ctx.needs_input_grad[0] else None
    grad_weight = rows.t() @ x.reshape(rows.shape[0], x.shape[-1]) \
        if ctx.needs_input_grad[1] else None
    grad_bias = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_weight, grad_bias


torch.library.register_autograd("dyrate::decode_linear", _backward,
                                setup_context=_save_for_backward)


@register_flop_formula(torch.ops.dyrate.decode_linear)
def _flops(x_shape, weight_shape, bias_shape, out_shape=None, **kwargs) -> int:
    """As aten.addmm counts it, so FlopCounterMode sees the decoder's matmuls (the FLOPs test)."""
    return 2 * math.prod(x_shape[:-1]) * weight_shape[0] * weight_shape[1]


def decode_linear(x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``, fast for the 1-64 rows of a decode step on the CPU.

    Args:
        x: ``[..., K]`` fp32/bf16/fp16, any strides.
        weight: ``[N, K]``, the dtype and device of ``x`` (a ``nn.Linear`` weight).
        bias: ``[N]`` or None.

    Returns:
        ``[..., N]`` in the dtype of ``x``, equal to ``F.linear(x, weight, bias)`` up to the order
        of the fp32 sums. More than 64 rows (a prefill) go to ``at::linear``, which is faster
        there; the two sum in different orders, so a row's last bits can depend on how many rows
        share the call.
    """
    check_decode_linear(x, weight, bias)
    return torch.ops.dyrate.decode_linear(x, weight, bias)
