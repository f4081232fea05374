"""Property tests of the decoder's dense ops (decode_linear, RMSNorm, the residual add with
RMSNorm, SiLU-gate and RoPE) against their references: random shapes on and off the SIMD widths,
empty inputs, fp32 / bf16 / fp16, strided views (handled: each op reads any strides but a
contiguous last dimension where its docstring says so)."""
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from dyrate_engine import ops
from conftest import poison_allocator
from op_strategies import PROPERTY, dtypes, randn, strided

# Output rounding of each dtype (and fp32 summation order).
TOL = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def _close(got, want, dtype):
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


def _gen(data):
    return torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16), label="seed"))


@PROPERTY
@given(data=st.data())
def test_decode_linear_matches_float64(data):
    dtype, gen = data.draw(dtypes), _gen(data)
    rows, k, n = (data.draw(st.integers(0, 20)), data.draw(st.integers(1, 70)),
                  data.draw(st.integers(1, 40)))
    lead = data.draw(st.sampled_from([(), (1,), (2,)]))
    x = strided((randn(gen, *lead, rows, k) / k ** 0.5).to(dtype), -1, data.draw(st.integers(0, 3)))
    weight = strided(randn(gen, n, k, dtype=dtype), 0, data.draw(st.integers(0, 2)))
    bias = randn(gen, n, dtype=dtype) if data.draw(st.booleans()) else None
    poison_allocator("cpu")
    got = ops.decode_linear(x, weight, bias)
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    assert got.dtype == dtype and got.shape == exact.shape
    torch.testing.assert_close(got.double(), exact, rtol=TOL[dtype], atol=TOL[dtype])


@PROPERTY
@given(data=st.data())
def test_rms_norms_match_reference(data):
    dtype, gen = data.draw(dtypes), _gen(data)
    rows, d = data.draw(st.integers(0, 9)), data.draw(st.integers(1, 70))
    pad = data.draw(st.integers(0, 3))
    x = strided(randn(gen, rows, d, dtype=dtype) * 3, 1, pad)
    residual = strided(randn(gen, rows, d, dtype=dtype), 0, data.draw(st.integers(0, 2)))
    weight = randn(gen, d, dtype=dtype)
    poison_allocator("cpu")
    _close(ops.rms_norm(x, weight, 1e-6), ops.rms_norm_reference(x, weight, 1e-6), dtype)
    hidden, normed = ops.add_rms_norm(x, residual, weight, 1e-6)
    want_hidden, want_normed = ops.add_rms_norm_reference(x, residual, weight, 1e-6)
    assert torch.equal(hidden, want_hidden)  # the add rounds once, as PyTorch's does
    _close(normed, want_normed, dtype)


@PROPERTY
@given(data=st.data())
def test_silu_mul_matches_reference(data):
    dtype, gen = data.draw(dtypes), _gen(data)
    rows, f = data.draw(st.integers(0, 9)), data.draw(st.integers(1, 70))
    gate_up = strided(randn(gen, rows, 2 * f, dtype=dtype) * 4, 1, data.draw(st.integers(0, 3)))
    poison_allocator("cpu")
    _close(ops.silu_mul(gate_up), ops.silu_mul_reference(gate_up), dtype)


@PROPERTY
@given(data=st.data())
def test_rope_matches_reference(data):
    dtype, gen = data.draw(dtypes), _gen(data)
    B, T, heads = (data.draw(st.integers(1, 3)), data.draw(st.integers(0, 7)),
                   data.draw(st.integers(1, 4)))
    hd = 2 * data.draw(st.integers(1, 40))
    # A view of a fused projection [B, T, (q + k + v) heads, hd], as the decoder passes it.
    fused = randn(gen, B, T, 3 * heads, hd, dtype=dtype)
    x = fused[:, :, heads * data.draw(st.integers(0, 2)):][:, :, :heads]
    angle = randn(gen, B, T, hd // 2) * 10
    cos = torch.cat([angle.cos()] * 2, -1).to(dtype)
    sin = torch.cat([angle.sin()] * 2, -1).to(dtype)
    poison_allocator("cpu")
    got = ops.rope(x, cos, sin)
    assert got.shape == (B, heads, T, hd) and got.is_contiguous()
    assert torch.equal(got, ops.rope_reference(x, cos, sin))  # no FMA: PyTorch's rounding
