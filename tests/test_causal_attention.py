"""causal_attention against an fp64 softmax written out here and against its SDPA reference:
every dtype, GQA, prompts around the kernel's 64-query blocks, more keys than queries, strided
views of a fused projection and odd strides, future keys replaced, empty prompts, bad arguments,
opcheck, and the engine's prefill running it."""
import math

import pytest
import torch

from dyrate_engine import ops
from conftest import FLOAT_DTYPES, RecordOps, poison_allocator
from tiny_models import build_tiny_llava, random_prompts

# fp32: summation order. The halves: the reference rounds its products and probabilities to the
# dtype, the kernel keeps them in fp32.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def attention_fp64(q, k, v, scale=None):
    """softmax(q k^T * scale + causal mask aligned to the last key) v, in fp64."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    k = k.double().repeat_interleave(H // Hkv, dim=1)
    v = v.double().repeat_interleave(H // Hkv, dim=1)
    scale = 1 / math.sqrt(D) if scale is None else scale
    logits = q.double() @ k.transpose(-1, -2) * scale
    visible = torch.arange(S)[None, :] <= torch.arange(T)[:, None] + (S - T)
    logits = logits.masked_fill(~visible.to(q.device), float("-inf"))
    return torch.softmax(logits, -1) @ v


def fused_qkv(gen, B, T, H, Hkv, D, dtype, device, extra_keys=0):
    """q, k, v as the decoder has them: views of one projection [B, S, (H + 2 Hkv) D]."""
    S = T + extra_keys
    x = torch.randn(B, S, (H + 2 * Hkv) * D, generator=gen).to(device, dtype)
    q = x[:, extra_keys:, :H * D].unflatten(-1, (H, D)).transpose(1, 2)
    k = x[:, :, H * D:(H + Hkv) * D].unflatten(-1, (Hkv, D)).transpose(1, 2)
    v = x[:, :, (H + Hkv) * D:].unflatten(-1, (Hkv, D)).transpose(1, 2)
    return q, k, v


def close(got, want, dtype):
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("B, T, H, Hkv, D, extra", [
    (1, 1, 1, 1, 8, 0), (2, 63, 4, 4, 16, 0), (1, 64, 4, 2, 64, 0), (2, 65, 6, 1, 32, 0),
    (1, 130, 2, 2, 80, 0), (2, 40, 4, 2, 16, 9), (1, 70, 3, 3, 8, 70), (1, 5, 2, 1, 3, 0)])
def test_matches_the_written_out_softmax(device, dtype, B, T, H, Hkv, D, extra):
    gen = torch.Generator().manual_seed(T * 31 + D + extra)
    q, k, v = fused_qkv(gen, B, T, H, Hkv, D, dtype, device, extra)
    poison_allocator(device)
    got = ops.causal_attention(q, k, v)
    assert got.shape == (B, H, T, D) and got.dtype == dtype and got.device == q.device
    assert got.transpose(1, 2).is_contiguous()  # [B, T, H, D] underneath
    close(got, attention_fp64(q, k, v), dtype)
    close(got, ops.causal_attention_reference(q, k, v), dtype)


def test_contiguous_inputs_and_a_given_scale(device):
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 100, 32, generator=gen).to(device)
    k, v = (torch.randn(2, 2, 100, 32, generator=gen).to(device) for _ in range(2))
    close(ops.causal_attention(q, k, v, 0.3), attention_fp64(q, k, v, 0.3), torch.float32)


def test_no_query_reads_a_key_after_its_own(device):
    """Keys and values past position t replaced by other (large) values leave queries 0..t
    exactly as they were, and change the queries after t."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = fused_qkv(gen, 1, 97, 4, 2, 16, torch.float32, device)
    want = ops.causal_attention(q, k, v)
    for t in (0, 40, 63, 64, 95):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, t + 1:] = 100 * torch.randn(k2[:, :, t + 1:].shape, generator=gen).to(device)
        v2[:, :, t + 1:] = 100 * torch.randn(v2[:, :, t + 1:].shape, generator=gen).to(device)
        got = ops.causal_attention(q, k2, v2)
        assert torch.equal(got[:, :, :t + 1], want[:, :, :t + 1])
        assert (got[:, :, t + 1:] != want[:, :, t + 1:]).any(-1).all()


def test_odd_strides_of_single_rows_and_broadcast_keys(device):
    """A one-token prompt's views may carry any stride on the token dim, and expanded keys a
    zero one; neither is a leading dimension BLAS accepts as it is."""
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(2, 4, 1, 8, generator=gen).to(device).as_strided((2, 4, 1, 8), (32, 8, 1, 1))
    k = torch.randn(2, 2, 1, 8, generator=gen).to(device).as_strided((2, 2, 1, 8), (16, 8, 3, 1))
    close(ops.causal_attention(q, k, k), attention_fp64(q, k, k), torch.float32)
    q = torch.randn(1, 2, 5, 8, generator=gen).to(device)
    k = torch.randn(1, 2, 1, 8, generator=gen).to(device).expand(1, 2, 7, 8)
    close(ops.causal_attention(q, k, k), attention_fp64(q, k, k), torch.float32)


def test_empty_prompt(device):
    q = torch.randn(2, 4, 0, 8, device=device)
    k = torch.randn(2, 2, 0, 8, device=device)
    assert ops.causal_attention(q, k, k).shape == (2, 4, 0, 8)


def test_bad_arguments_are_clear_errors():
    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(ValueError, match=r"q must be \[B, H, T, D\]"):
        ops.causal_attention(q[0], k, k)
    with pytest.raises(ValueError, match="multiple of key heads"):
        ops.causal_attention(q[:, :3], k, k)
    with pytest.raises(ValueError, match="v must have q's dtype"):
        ops.causal_attention(q, k, k.half())
    with pytest.raises(ValueError, match="6 queries need at least as many keys, got 5"):
        ops.causal_attention(q, k[:, :, :5], k[:, :, :5])
    with pytest.raises(ValueError, match=r"v must be \[1, Hkv, S, 8\] like k"):
        ops.causal_attention(q, k, k[:, :1])
    with pytest.raises(ValueError, match="contiguous head dim"):
        ops.causal_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), k)
    with pytest.raises(ValueError, match="q must be float32"):
        ops.causal_attention(q.long(), k, k)


def test_cpu_kernel_checks_its_arguments_itself():
    """C++ callers skip the Python checks; the kernel refuses what would read out of bounds."""
    if ops.backends()["causal_attention"]["cpu"] != "extension":
        pytest.skip("the C++ extension is not built")
    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(RuntimeError, match="at least as many keys"):
        torch.ops.dyrate.causal_attention(q, k[:, :, :5], k[:, :, :5], None)
    with pytest.raises(RuntimeError, match="multiple of key heads"):
        torch.ops.dyrate.causal_attention(q[:, :3], k, k, None)


def test_opcheck(device):
    gen = torch.Generator().manual_seed(2)
    for extra in (0, 3):
        q, k, v = fused_qkv(gen, 2, 20, 4, 2, 8, torch.float32, device, extra)
        torch.library.opcheck(torch.ops.dyrate.causal_attention.default, (q, k, v, None))


def test_flop_counter_counts_the_causal_products():
    from torch.utils.flop_counter import FlopCounterMode
    q, k = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 14, 8)
    with FlopCounterMode(display=False) as counter:
        ops.causal_attention(q, k, k)
    visible = sum(t + 4 + 1 for t in range(10))
    assert counter.get_total_flops() == 4 * 2 * 8 * visible


def test_the_engine_prefill_runs_it(tmp_path):
    """Every prompt's prefill attention in every layer but the last (which attends from the
    last row only) goes through the op on the CPU; the answers equal those with SDPA's causal
    path."""
    if not ops.EXTENSION_LOADED:
        pytest.skip("without the extension the decoder calls SDPA")
    from dyrate_engine import Engine
    from dyrate_engine.models import llama
    engine = Engine.from_pretrained(build_tiny_llava(tmp_path))
    ids, pixels = random_prompts(3)
    with RecordOps() as recorded:
        got = [r.token_ids for r in engine.generate_ids(ids, pixels, max_new_tokens=6)]
    n_layers = engine.model.decoder.n_layers
    assert recorded.names.count("dyrate.causal_attention.default") == 3 * (n_layers - 1)
    llama.CPU_CAUSAL_ATTENTION = False
    try:
        want = [r.token_ids for r in engine.generate_ids(ids, pixels, max_new_tokens=6)]
    finally:
        llama.CPU_CAUSAL_ATTENTION = True
    assert got == want
