"""``decode_attention`` and its monitor variant: the dispatched op (the C++ kernel on the CPU,
Triton on CUDA) and the Triton kernels themselves (interpreted on the CPU) against the readable
references, on ragged fixed-capacity caches."""
import pytest
import torch

from dyrate_engine import ops
from dyrate_engine.ops.decode_attention import (
    triton_decode_attention,
    triton_decode_attention_monitor,
)
from conftest import FLOAT_DTYPES, poison_allocator, random_spans, random_visual_slots

TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def make_cache(gen, B, hkv, group, cap, d, dtype, device, layers=1):
    q = torch.randn(B, hkv * group, d, generator=gen).to(dtype).to(device)
    kv = torch.randn(layers, 2, B, hkv, cap, d, generator=gen).to(dtype).to(device)
    return q, kv


def attention_impls(device):
    """The op through the dispatcher, and the Triton kernel itself (on the CPU: interpreted)
    where triton is installed."""
    impls = [ops.decode_attention]
    if ops.TRITON_AVAILABLE:
        impls.append(lambda *a, window=None: triton_decode_attention(*a, window=window))
    return impls


def reads_only_lengths(device):
    """The implementations that never read past a sequence's length: the Triton kernel and the
    C++ CPU kernel (the reference's SDPA reads every slot and masks)."""
    impls = attention_impls(device)
    backend = ops.backends()["decode_attention"][torch.device(device).type]
    return impls if backend != "reference" else impls[1:]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("group", [1, 3, 4, 7])
def test_random_ragged_lengths(device, dtype, group):
    gen = torch.Generator().manual_seed(group * 11 + FLOAT_DTYPES.index(dtype))
    for trial, (B, hkv, cap, d) in enumerate([(3, 2, 37, 16), (1, 1, 5, 8), (4, 2, 70, 64)]):
        q, kv = make_cache(gen, B, hkv, group, cap, d, dtype, device, layers=2)
        k, v = kv[1, 0], kv[1, 1]  # strided views of the engine's cache layout
        lengths = torch.randint(0, cap + 1, (B,), generator=gen)
        lengths[0] = [0, 1, cap][trial]
        lengths = lengths.to(device)
        for window in (None, 1 + trial * 3):
            ref = ops.decode_attention_reference(q, k, v, lengths, None, window)
            for impl in attention_impls(device):
                poison_allocator(device)
                out = impl(q, k, v, lengths, window=window)
                assert out.dtype == dtype and out.shape == q.shape
                torch.testing.assert_close(out, ref, atol=TOL[dtype], rtol=TOL[dtype])
                assert (out[lengths == 0] == 0).all()


def test_reads_only_each_sequence_length(device):
    """Stale slots past a sequence's length change nothing (huge values); the Triton and C++
    kernels never read them at all (NaN there changes nothing either)."""
    gen = torch.Generator().manual_seed(3)
    q, kv = make_cache(gen, 3, 2, 4, 30, 16, torch.float32, device)
    lengths = torch.tensor([30, 12, 1], device=device)
    ref = ops.decode_attention_reference(q, kv[0, 0], kv[0, 1], lengths)
    for stale, impls in ((1e30, attention_impls(device)), (float("nan"),
                                                            reads_only_lengths(device))):
        assert impls
        for b, n in enumerate(lengths.tolist()):
            kv[0, :, b, :, n:] = stale
        for impl in impls:
            torch.testing.assert_close(impl(q, kv[0, 0], kv[0, 1], lengths), ref)


def test_after_compaction_equals_attention_over_the_kept_keys(device):
    gen = torch.Generator().manual_seed(5)
    B, cap, nv = 2, 24, 10
    q, kv = make_cache(gen, B, 2, 2, cap, 16, torch.float32, device)
    lengths = torch.tensor([24, 17], device=device)
    vis_start = torch.tensor([2, 4], device=device)
    present = torch.ones(B, nv, dtype=torch.bool, device=device)
    keep = torch.rand(B, nv, generator=gen).to(device) < 0.5
    kept = [keep[b].nonzero()[:, 0].cpu() for b in range(B)]
    kept_slots = [torch.cat([torch.arange(2), 2 + kept[0], torch.arange(12, 24)]),
                  torch.cat([torch.arange(4), 4 + kept[1], torch.arange(14, 17)])]
    expected = [ops.decode_attention_reference(q[b:b + 1], kv[0, 0, b:b + 1, :, s.to(device)],
                                               kv[0, 1, b:b + 1, :, s.to(device)],
                                               torch.tensor([len(s)], device=device))
                for b, s in enumerate(kept_slots)]
    ops.compact_kv_(kv, lengths, vis_start, present, keep)
    for impl in attention_impls(device):
        torch.testing.assert_close(impl(q, kv[0, 0], kv[0, 1], lengths), torch.cat(expected))


def check_monitor(q, k, v, lengths, vs, vl, pl, max_vis, vis_slots=None):
    cap = k.shape[2]
    rank = ops.visual_rank_table(vs, vl, vis_slots, cap, max_vis)
    ref_scores, ref_mass = ops.attention_scores_reference(q, k, lengths, vs, vl, pl, None, max_vis,
                                                          vis_slots)
    ref_out = ops.decode_attention_reference(q, k, v, lengths)
    impls = [ops.decode_attention_monitor]
    if ops.TRITON_AVAILABLE:
        impls.append(lambda *a, max_vis: triton_decode_attention_monitor(*a, None, max_vis))
    for impl in impls:
        poison_allocator(q.device)
        out, scores, mass = impl(q, k, v, lengths, rank, vs, pl, max_vis=max_vis)
        tol = TOL[q.dtype]
        torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
        torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mass, ref_mass, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("group", [1, 4, 7])
def test_monitor_equals_attention_and_scores(device, dtype, group):
    gen = torch.Generator().manual_seed(group + 100 * FLOAT_DTYPES.index(dtype))
    for B, hkv, cap, d in [(3, 1, 33, 16), (2, 2, 9, 32)]:
        q, kv = make_cache(gen, B, hkv, group, cap, d, dtype, device)
        lengths, vs, vl, pl = (t.to(device) for t in random_spans(gen, B, cap, max_vis=cap))
        check_monitor(q, kv[0, 0], kv[0, 1], lengths, vs, vl, pl, int(vl.max()) + 1)


def test_monitor_with_several_visual_spans(device):
    gen = torch.Generator().manual_seed(9)
    B, cap = 4, 28
    q, kv = make_cache(gen, B, 2, 3, cap, 16, torch.float32, device)
    lengths, vs, vl, pl, slots = (t.to(device) for t in random_visual_slots(gen, B, cap, 12))
    check_monitor(q, kv[0, 0], kv[0, 1], lengths, vs, vl, pl, 12, slots)


def test_bad_arguments_are_clear_errors():
    q, kv = make_cache(torch.Generator().manual_seed(0), 2, 2, 2, 8, 16, torch.float32, "cpu")
    lengths = torch.tensor([3, 4])
    with pytest.raises(ValueError, match="multiple of key heads"):
        ops.decode_attention(q[:, :3], kv[0, 0], kv[0, 1], lengths)
    with pytest.raises(ValueError, match="lengths must be int32 or int64"):
        ops.decode_attention(q, kv[0, 0], kv[0, 1], lengths.float())
    with pytest.raises(ValueError, match="v_cache must have q's dtype"):
        ops.decode_attention(q, kv[0, 0], kv[0, 1].half(), lengths)
    with pytest.raises(ValueError, match="window must be >= 1"):
        ops.decode_attention(q, kv[0, 0], kv[0, 1], lengths, window=0)
    with pytest.raises(ValueError, match="visual_rank must be int32 or int64"):
        ops.decode_attention_monitor(q, kv[0, 0], kv[0, 1], lengths, torch.zeros(2, 7).long(),
                                     lengths, lengths, max_vis=2)


def test_opcheck(device):
    gen = torch.Generator().manual_seed(2)
    q, kv = make_cache(gen, 2, 2, 2, 12, 16, torch.float32, device)
    lengths = torch.tensor([12, 5], device=device)
    torch.library.opcheck(torch.ops.dyrate.decode_attention.default,
                          (q, kv[0, 0], kv[0, 1], lengths, None, None))
    vs, vl, pl = (torch.tensor(x, device=device) for x in ([1, 0], [6, 3], [9, 4]))
    rank = ops.visual_rank_table(vs, vl, None, 12, 6)
    torch.library.opcheck(torch.ops.dyrate.decode_attention_monitor.default,
                          (q, kv[0, 0], kv[0, 1], lengths, rank, vs, pl, None, 6))


def test_cpu_kernel_refuses_a_length_past_the_capacity():
    """The C++ kernel reads the lengths (no sync on the CPU) and bounds them before any read."""
    if ops.backends()["decode_attention"]["cpu"] != "extension":
        pytest.skip("the C++ extension is not built")
    q, kv = make_cache(torch.Generator().manual_seed(0), 2, 2, 2, 8, 16, torch.float32, "cpu")
    for bad in (9, -1):
        with pytest.raises(RuntimeError, match=f"sequence 1 has length {bad}, outside"):
            torch.ops.dyrate.decode_attention(q, kv[0, 0], kv[0, 1], torch.tensor([3, bad]),
                                              None, None)
    with pytest.raises(RuntimeError, match="window must be >= 1"):
        torch.ops.dyrate.decode_attention(q, kv[0, 0], kv[0, 1], torch.tensor([3, 4]), None, 0)
