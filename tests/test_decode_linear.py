"""decode_linear against F.linear in float64, on the kernel's paths and their edges: rows 0-64
(blocks of 3 and the remainders), 65+ (the BLAS path), weight rows not a multiple of 4, K not a
multiple of 8 (the scalar tail), every dtype, biases, leading dims, strided inputs."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from dyrate_engine import ops
from dyrate_engine.models.llama import linear
from conftest import FLOAT_DTYPES, RecordOps, poison_allocator

# Output rounding of each dtype, plus fp32 summation order over K <= 2048 terms of size 1/K.
TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def case(gen, rows, n, k, dtype, bias=True, lead=()):
    # Scaled so every output is O(1) and the tolerance means the same for every K.
    x = (torch.randn(*lead, rows, k, generator=gen) / k ** 0.5).to(dtype)
    w = torch.randn(n, k, generator=gen).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    return x, w, b


def check(x, w, b, device):
    poison_allocator(device)
    got = ops.decode_linear(x.to(device), w.to(device), None if b is None else b.to(device)).cpu()
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert got.dtype == x.dtype and got.shape == exact.shape
    torch.testing.assert_close(got.double(), exact, rtol=TOLERANCE[x.dtype],
                               atol=TOLERANCE[x.dtype])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("rows", [0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 64, 65, 200])
def test_matches_float64(device, dtype, rows):
    gen = torch.Generator().manual_seed(rows)
    for n, k in ((1, 1), (3, 7), (5, 9), (33, 100), (70, 768), (8, 2048)):
        check(*case(gen, rows, n, k, dtype, bias=n % 2 == 1), device)


def test_leading_dims_and_strided_input(device):
    gen = torch.Generator().manual_seed(1)
    x, w, b = case(gen, 3, 21, 40, torch.float32, lead=(4,))
    check(x, w, b, device)  # [4, 3, 40]: 12 rows
    check(x.transpose(0, 1), w, b, device)  # non-contiguous rows
    wide = torch.randn(21, 80, generator=gen)
    check(x, wide[:, ::2], b, device)  # strided weight


def test_zero_inner_dimension_gives_the_bias(device):
    x, w, b = torch.empty(2, 0), torch.empty(3, 0), torch.arange(3.0)
    check(x, w, b, device)
    check(x, w, None, device)


def test_is_what_the_decoder_uses():
    if not ops.EXTENSION_LOADED:
        pytest.skip("without the extension the decoder calls F.linear")
    gen = torch.Generator().manual_seed(2)
    x, w, b = case(gen, 5, 12, 24, torch.float32)
    with RecordOps() as recorded:
        linear(x, w, b)
    assert recorded.names == ["dyrate.decode_linear.default"]


@pytest.mark.skipif("avx2" not in open("/proc/cpuinfo").read() if sys.platform == "linux"
                    else True, reason="the kernel needs AVX2")
@pytest.mark.skipif(os.environ.get("DYRATE_CPU_ISA") == "scalar",
                    reason="DYRATE_CPU_ISA=scalar: at::linear serves every row count")
def test_the_kernel_path_runs_and_differs_from_blas_only_in_rounding():
    """The AVX2 kernel sums in another order than BLAS, so some outputs differ in the last bits:
    if they were all identical the op would be handing everything to at::linear."""
    if not ops.EXTENSION_LOADED:
        pytest.skip("extension not built")
    gen = torch.Generator().manual_seed(6)
    x, w, _ = case(gen, 8, 64, 768, torch.float32)
    fast, blas = ops.decode_linear(x, w), F.linear(x, w)
    assert not torch.equal(fast, blas)
    torch.testing.assert_close(fast, blas, rtol=1e-5, atol=1e-5)
    many = torch.randn(65, 768, generator=gen) / 28.0  # past 64 rows: BLAS, bit for bit
    assert torch.equal(ops.decode_linear(many, w), F.linear(many, w))


@pytest.mark.parametrize("bad, message", [
    (lambda x, w, b: (x, w[:, :-1], b), r"weight must be \[N, 8\]"),
    (lambda x, w, b: (x, w.double(), b), "weight is torch.float64"),
    (lambda x, w, b: (x, w, b[:-1]), r"bias must be \[5\]"),
    (lambda x, w, b: (x, w, b.half()), "bias is torch.float16"),
    (lambda x, w, b: (x.long(), w, b), "x must be float32"),
])
def test_bad_arguments(bad, message):
    x, w, b = torch.randn(2, 8), torch.randn(5, 8), torch.randn(5)
    with pytest.raises(ValueError, match=message):
        ops.decode_linear(*bad(x, w, b))


def test_cpu_kernel_checks_shapes_without_the_wrapper():
    if ops.backends()["decode_linear"]["cpu"] != "extension":
        pytest.skip("extension not built")
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.dyrate.decode_linear(torch.randn(2, 8), torch.randn(5, 7), None)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_opcheck(device, dtype):
    gen = torch.Generator().manual_seed(3)
    for rows, lead, bias in ((4, (), True), (80, (), True), (5, (2,), False), (1, None, False)):
        x, w, b = case(gen, rows, 9, 16, dtype, bias=bias, lead=lead or ())
        if lead is None:
            x = x[0]  # one-dimensional x
        torch.library.opcheck(torch.ops.dyrate.decode_linear.default,
                              (x.to(device), w.to(device), None if b is None else b.to(device)))


@pytest.mark.parametrize("rows, n, k", [(3, 6, 10), (80, 6, 10), (3, 0, 10), (3, 6, 0)])
@pytest.mark.parametrize("needs", ["all", "x only", "no bias"])
def test_gradients_equal_f_linear(rows, n, k, needs):
    gen = torch.Generator().manual_seed(5)
    x, w, b = case(gen, rows, n, k, torch.float32, lead=(2,))
    if needs == "no bias":
        b = None
    flags = (True, needs != "x only", needs != "x only")
    got = [None if t is None else t.clone().requires_grad_(f) for t, f in zip((x, w, b), flags)]
    want = [None if t is None else t.clone().requires_grad_(f) for t, f in zip((x, w, b), flags)]
    grad_out = torch.randn(2, rows, n, generator=gen)
    ops.decode_linear(*got).backward(grad_out)
    F.linear(*want).backward(grad_out)
    for g, wnt in zip(got, want):
        if g is not None:
            assert (g.grad is None) == (wnt.grad is None)
            if g.grad is not None:
                torch.testing.assert_close(g.grad, wnt.grad)
