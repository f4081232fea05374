"""rms_norm, add_rms_norm, silu_mul and rope against their PyTorch references: every dtype,
widths that are and are not multiples of the kernels' 8 lanes, strided inputs (RoPE of a view of
the fused q/k/v projection), empty tensors, poisoned outputs, gradients, bad arguments, opcheck,
and the decoder running them."""
import pytest
import torch

from dyrate_engine import ops
from conftest import FLOAT_DTYPES, RecordOps, poison_allocator
from tiny_models import build_tiny_llava

# fp32: the RMS sum's order and silu's exp differ in the last bits. The halves: two roundings (the
# normalised value, then its product with the weight) where the statistics' last bit flips them.
TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape and got.is_contiguous()
    tol = TOLERANCE[want.dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


def angles(gen, B, T, hd, dtype):
    positions = torch.randint(0, 4096, (B, T), generator=gen)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    freqs = positions[..., None].float() * inv_freq
    full = torch.cat((freqs, freqs), -1)
    return full.cos().to(dtype), full.sin().to(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 7, 13), (3, 609, 768), (5, 64), (4, 3, 2, 5)])
def test_rms_norms_match_the_reference(device, dtype, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 3).to(device, dtype)
    residual = torch.randn(shape, generator=gen).to(device, dtype)
    weight = torch.randn(shape[-1], generator=gen).to(device, dtype)
    poison_allocator(device)
    close(ops.rms_norm(x, weight, 1e-6), ops.rms_norm_reference(x, weight, 1e-6))
    hidden, normed = ops.add_rms_norm(x, residual, weight, 1e-5)
    want_hidden, want_normed = ops.add_rms_norm_reference(x, residual, weight, 1e-5)
    assert torch.equal(hidden, want_hidden)  # one rounding of one add: bit for bit
    close(normed, want_normed)


def test_rms_norm_of_a_strided_view_and_of_nothing():
    gen = torch.Generator().manual_seed(1)
    wide, weight = torch.randn(6, 40, generator=gen), torch.randn(20, generator=gen)
    view = wide[:, ::2]
    close(ops.rms_norm(view, weight, 1e-5), ops.rms_norm_reference(view, weight, 1e-5))
    assert ops.rms_norm(torch.empty(0, 20), weight, 1e-5).shape == (0, 20)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (3, 5, 18), (2, 609, 4096), (7, 130)])
def test_silu_mul_matches_the_reference(device, dtype, shape):
    gen = torch.Generator().manual_seed(shape[-1])
    gate_up = (torch.randn(shape, generator=gen) * 6).to(device, dtype)
    gate_up[..., 0] = -100.0  # far below exp's range: silu is (almost) -0
    poison_allocator(device)
    close(ops.silu_mul(gate_up), ops.silu_mul_reference(gate_up))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("B, T, heads, kv_heads, hd", [(1, 1, 1, 1, 2), (2, 9, 4, 2, 16),
                                                       (1, 609, 12, 12, 64), (3, 5, 6, 2, 6),
                                                       (2, 3, 2, 1, 20)])
def test_rope_of_the_fused_projection_is_exact(device, dtype, B, T, heads, kv_heads, hd):
    """q and k are strided views of one q/k/v output; the kernel rounds where PyTorch does."""
    gen = torch.Generator().manual_seed(T * hd)
    qkv = torch.randn(B, T, (heads + 2 * kv_heads) * hd, generator=gen).to(device, dtype)
    q = qkv[..., :heads * hd].unflatten(-1, (heads, hd))
    k = qkv[..., heads * hd:(heads + kv_heads) * hd].unflatten(-1, (kv_heads, hd))
    cos, sin = (t.to(device) for t in angles(gen, B, T, hd, dtype))
    poison_allocator(device)
    for x in (q, k):
        got = ops.rope(x, cos, sin)
        assert got.shape == (B, x.shape[2], T, hd) and got.is_contiguous()
        assert torch.equal(got, ops.rope_reference(x, cos, sin))


def test_rope_reads_strided_angles_and_empty_inputs():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 8, generator=gen)
    cos, sin = angles(gen, 2, 3, 8, torch.float32)
    cos_view = torch.stack((cos, cos), 1)[:, 0]  # a non-contiguous batch stride
    assert torch.equal(ops.rope(x, cos_view, sin), ops.rope_reference(x, cos, sin))
    assert ops.rope(x[:, :0], cos[:, :0], sin[:, :0]).shape == (2, 4, 0, 8)


@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "silu_mul", "rope"])
def test_gradients_equal_the_reference(op):
    gen = torch.Generator().manual_seed(3)
    x, other = torch.randn(2, 5, 3, 8, generator=gen), torch.randn(2, 5, 3, 8, generator=gen)
    weight = torch.randn(8, generator=gen)
    cos, sin = angles(gen, 2, 5, 8, torch.float32)
    calls = {"rms_norm": lambda f, a, b: f(a, weight, 1e-5),
             "add_rms_norm": lambda f, a, b: torch.cat(f(a, b, weight, 1e-5)),
             "silu_mul": lambda f, a, b: f(a) * b[..., :4],
             "rope": lambda f, a, b: f(a, cos, sin)}
    grads = []
    for f in (getattr(ops, op), getattr(ops, f"{op}_reference")):
        a, b = x.clone().requires_grad_(), other.clone().requires_grad_()
        out = calls[op](f, a, b)
        out.backward(torch.ones_like(out) + torch.arange(out.shape[-1]))
        grads.append((a.grad, b.grad))
    (got_a, got_b), (want_a, want_b) = grads
    torch.testing.assert_close(got_a, want_a, rtol=1e-5, atol=1e-5)
    assert (got_b is None) == (want_b is None)
    if want_b is not None:
        torch.testing.assert_close(got_b, want_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: ops.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-5), r"weight must be \[8\]"),
    (lambda: ops.rms_norm(torch.randn(2, 8).long(), torch.randn(8), 1e-5), "x must be float32"),
    (lambda: ops.add_rms_norm(torch.randn(2, 8), torch.randn(3, 8), torch.randn(8), 1e-5),
     "residual must be like x"),
    (lambda: ops.add_rms_norm(torch.randn(2, 8), torch.randn(2, 8).half(), torch.randn(8), 1e-5),
     "residual is torch.float16"),
    (lambda: ops.silu_mul(torch.randn(2, 7)), "last dimension must be even"),
    (lambda: ops.rope(torch.randn(2, 3, 4, 7), torch.randn(2, 3, 7), torch.randn(2, 3, 7)),
     "even head_dim"),
    (lambda: ops.rope(torch.randn(2, 3, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 8)),
     r"cos must be torch.float32 \[2, 3, 8\]"),
    (lambda: ops.rope(torch.randn(2, 3, 8, 4).transpose(2, 3), torch.randn(2, 3, 8),
                      torch.randn(2, 3, 8)), "head dimension must be contiguous"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cpu_kernels_check_without_the_wrappers():
    if ops.backends()["rope"]["cpu"] != "extension":
        pytest.skip("extension not built")
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.dyrate.rms_norm(torch.randn(2, 8), torch.randn(5), 1e-5)
    with pytest.raises(RuntimeError, match="must be even"):
        torch.ops.dyrate.silu_mul(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match="cos and sin must be"):
        torch.ops.dyrate.rope(torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6), torch.randn(2, 3, 6))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_opcheck(device, dtype):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 24, generator=gen).to(device, dtype)
    weight = torch.randn(24, generator=gen).to(device, dtype)
    cos, sin = (t.to(device) for t in angles(gen, 2, 5, 8, dtype))
    cases = [(torch.ops.dyrate.rms_norm.default, (x, weight, 1e-5)),
             (torch.ops.dyrate.add_rms_norm.default, (x, x.flip(0), weight, 1e-5)),
             (torch.ops.dyrate.silu_mul.default, (x,)),
             (torch.ops.dyrate.rope.default, (x.unflatten(-1, (3, 8)), cos, sin))]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_the_decoder_runs_them_on_the_cpu(tmp_path):
    if not ops.EXTENSION_LOADED:
        pytest.skip("without the extension the decoder calls the references")
    from dyrate_engine import Engine
    dec = Engine.from_pretrained(build_tiny_llava(tmp_path)).model.decoder
    h = torch.randn(1, 4, dec.config.hidden_size)
    cos, sin = dec.rope(torch.arange(4)[None])
    with RecordOps() as recorded:
        q, _, _ = dec.qkv(dec.layers[0], h, cos, sin)
        dec.finish_layer(dec.layers[0], h, q)
    for name in ("rms_norm", "add_rms_norm", "silu_mul", "rope"):
        assert f"dyrate.{name}.default" in recorded.names
    assert not {"aten.silu.default", "aten.rsqrt.default", "aten.cat.default"} & set(recorded.names)
