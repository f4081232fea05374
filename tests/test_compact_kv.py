import pytest
import torch

from dyrate_engine import ops
from conftest import FLOAT_DTYPES

SENTINEL = -77


def make_case(gen, L, B, hkv, cap, d, nv, dtype):
    """Ragged sequences whose present visual tokens sit at vis_start.., then other tokens."""
    present = torch.rand(B, nv, generator=gen) < 0.7
    n_present = present.sum(1)
    vis_start = torch.stack([torch.randint(0, cap - int(n) + 1, (), generator=gen) for n in n_present])
    lengths = torch.stack([torch.randint(int(s + n), cap + 1, (), generator=gen)
                           for s, n in zip(vis_start, n_present)])
    kv = torch.randint(-50, 50, (L, 2, B, hkv, cap, d), generator=gen).to(dtype)
    for b in range(B):  # poison every slot at or past the length: it must never be written
        kv[:, :, b, :, lengths[b]:] = SENTINEL
    frac = torch.rand(B, generator=gen)
    scores = torch.rand(B, nv, generator=gen)
    keep = ops.select_keep_reference(scores, present, (n_present * frac).long())
    return kv, lengths, vis_start, present, keep


def oracle(kv, lengths, vis_start, present, keep):
    """Plain Python: list the surviving slots of each sequence, in order."""
    out, new_lengths = kv.clone(), lengths.clone()
    for b in range(kv.shape[2]):
        ranks = [j for j in range(present.shape[1]) if present[b, j]]
        start, length = int(vis_start[b]), int(lengths[b])
        dropped = {start + r for r, j in enumerate(ranks) if not keep[b, j]}
        survivors = [s for s in range(length) if s not in dropped]
        out[:, :, b, :, : len(survivors)] = kv[:, :, b, :, survivors]
        new_lengths[b] = len(survivors)
    return out, new_lengths


def check(kv, lengths, vis_start, present, keep, device):
    expected_kv, expected_lengths = oracle(kv, lengths, vis_start, present, keep)
    ref = [t.clone() for t in (kv, lengths, present)]
    ops.compact_kv_reference(ref[0], ref[1], vis_start, ref[2], keep)
    got = [t.clone().to(device) for t in (kv, lengths, present)]
    ops.compact_kv_(got[0], got[1], vis_start.to(device), got[2], keep.to(device))
    got = [t.cpu() for t in got]
    for name, (g_kv, g_len, g_present) in (("kernel", got), ("reference", ref)):
        assert torch.equal(g_len, expected_lengths), name
        assert torch.equal(g_present, present & keep), name
        for b in range(kv.shape[2]):
            new, old = int(expected_lengths[b]), int(lengths[b])
            assert torch.equal(g_kv[:, :, b, :, :new], expected_kv[:, :, b, :, :new]), name
            assert (g_kv[:, :, b, :, old:] == SENTINEL).all(), f"{name} wrote past the old length"
    return got


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32, torch.uint8])
def test_random_ragged(device, dtype):
    gen = torch.Generator().manual_seed(FLOAT_DTYPES.index(dtype) if dtype in FLOAT_DTYPES else 9)
    for L, B, hkv, cap, d, nv in [(1, 1, 1, 8, 4, 3), (2, 3, 2, 40, 16, 20), (3, 4, 4, 100, 64, 60),
                                  (1, 2, 1, 700, 128, 576), (2, 2, 3, 33, 3, 30)]:
        check(*make_case(gen, L, B, hkv, cap, d, nv, dtype), device)


def test_edge_cases(device):
    gen = torch.Generator().manual_seed(3)
    kv, lengths, vs, present, _ = make_case(gen, 2, 4, 2, 30, 8, 12, torch.float32)
    check(kv, lengths, vs, present, present.clone(), device)  # keep everything: nothing moves
    check(kv, lengths, vs, present, torch.zeros_like(present), device)  # drop every token
    # visual span at the very end, lengths at capacity, and a row with no visual tokens
    present = torch.tensor([[True, True, True], [False, False, False]])
    kv = torch.arange(1 * 2 * 2 * 1 * 6 * 2, dtype=torch.float32).view(1, 2, 2, 1, 6, 2)
    lengths, vs = torch.tensor([6, 6]), torch.tensor([3, 0])
    keep = torch.tensor([[False, True, False], [False, False, False]])
    got_kv, got_len, _ = check(kv, lengths, vs, present, keep, device)
    assert got_len.tolist() == [4, 6]
    # one visual token, dropped
    check(kv[:, :, :1], torch.tensor([6]), torch.tensor([5]), torch.tensor([[True]]),
          torch.tensor([[False]]), device)


def test_zero_layers_still_updates_metadata(device):
    kv = torch.zeros(0, 2, 1, 2, 8, 4, device=device)
    lengths, present = torch.tensor([8], device=device), torch.ones(1, 3, dtype=torch.bool, device=device)
    keep = torch.tensor([[True, False, False]], device=device)
    ops.compact_kv_(kv, lengths, torch.tensor([1], device=device), present, keep)
    assert lengths.tolist() == [6] and present.cpu().tolist() == [[True, False, False]]


@pytest.mark.parametrize("case, message", [
    ("keep_not_present", "keep_mask may only keep present tokens"),
    ("over_capacity", "capacity"),
    ("span_past_length", "visual span"),
])
def test_bad_values_raise_and_change_nothing(device, case, message):
    kv = torch.randn(1, 2, 2, 1, 10, 4, device=device)
    lengths, vs = torch.tensor([10, 8], device=device), torch.tensor([1, 2], device=device)
    present = torch.tensor([[True, True, False], [True, True, True]], device=device)
    keep = torch.tensor([[True, False, False], [False, True, False]], device=device)
    if case == "keep_not_present":
        keep[0, 2] = True
    elif case == "over_capacity":
        lengths[1] = 11
    else:
        vs[1] = 6
    before = [t.clone() for t in (kv, lengths, present)]
    with pytest.raises(ValueError, match=message):
        ops.compact_kv_(kv, lengths, vs, present, keep)
    for t, b in zip((kv, lengths, present), before):
        assert torch.equal(t, b)


def test_cpu_kernel_checks_values_without_the_wrapper():
    if ops.backends()["compact_kv_"]["cpu"] != "extension":
        pytest.skip("extension not built")
    kv, lengths = torch.randn(1, 2, 1, 1, 6, 2), torch.tensor([6])
    present, keep = torch.tensor([[False, True]]), torch.tensor([[True, False]])
    before = kv.clone()
    with pytest.raises(RuntimeError, match="not present"):
        torch.ops.dyrate.compact_kv_(kv, lengths, torch.tensor([0]), present, keep)
    assert torch.equal(kv, before) and lengths.tolist() == [6]


def test_bad_metadata(device):
    kv = torch.randn(1, 2, 1, 1, 6, 2, device=device)
    one = torch.tensor([6], device=device)
    present = torch.ones(1, 2, dtype=torch.bool, device=device)
    with pytest.raises(ValueError, match="contiguous"):
        ops.compact_kv_(kv.transpose(4, 5), one, one * 0, present, present)
    with pytest.raises(ValueError, match=r"\[L, 2, B, Hkv, Cap, D\]"):
        ops.compact_kv_(kv[0], one, one * 0, present, present)
    with pytest.raises(ValueError, match="keep_mask must be bool"):
        ops.compact_kv_(kv, one, one * 0, present, present.float())


def test_opcheck(device):
    gen = torch.Generator().manual_seed(4)
    kv, lengths, vs, present, keep = make_case(gen, 2, 3, 2, 20, 8, 10, torch.float32)
    args = tuple(t.to(device) for t in (kv, lengths, vs, present, keep))
    torch.library.opcheck(torch.ops.dyrate.compact_kv_.default, args)


def make_spans_case(gen, L, B, hkv, cap, d, nv, dtype):
    """Visual tokens at any ascending original slots (several spans, text between them), some
    already dropped by earlier compactions: a present token sits at its original slot less the
    visual tokens before it that are gone."""
    slots = torch.zeros(B, nv, dtype=torch.long)
    present = torch.rand(B, nv, generator=gen) < 0.7
    lengths = torch.zeros(B, dtype=torch.long)
    for b in range(B):
        chosen = torch.randperm(cap, generator=gen)[:nv].sort().values
        slots[b] = chosen
        current = chosen - (torch.cumsum((~present[b]).long(), 0) - (~present[b]).long())
        last = int(current[present[b]].max()) if present[b].any() else 0
        lengths[b] = torch.randint(last + 1, cap + 1, (), generator=gen)
    kv = torch.randint(-50, 50, (L, 2, B, hkv, cap, d), generator=gen).to(dtype)
    for b in range(B):
        kv[:, :, b, :, lengths[b]:] = SENTINEL
    scores = torch.rand(B, nv, generator=gen)
    n_present = present.sum(1)
    keep = ops.select_keep_reference(scores, present, (n_present * torch.rand(B, generator=gen)).long())
    return kv, lengths, slots, present, keep


def oracle_spans(kv, lengths, slots, present, keep):
    """Plain Python: the dropped tokens' current slots, then every other slot in order."""
    out, new_lengths = kv.clone(), lengths.clone()
    for b in range(kv.shape[2]):
        gone, dropped = 0, set()
        for j in range(present.shape[1]):
            if not present[b, j]:
                gone += 1
            elif not keep[b, j]:
                dropped.add(int(slots[b, j]) - gone)
        survivors = [s for s in range(int(lengths[b])) if s not in dropped]
        out[:, :, b, :, :len(survivors)] = kv[:, :, b, :, survivors]
        new_lengths[b] = len(survivors)
    return out, new_lengths


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_several_visual_spans(device, dtype):
    gen = torch.Generator().manual_seed(21)
    for L, B, hkv, cap, d, nv in [(1, 1, 1, 10, 4, 3), (2, 3, 2, 60, 16, 30), (1, 2, 2, 300, 8, 200)]:
        kv, lengths, slots, present, keep = make_spans_case(gen, L, B, hkv, cap, d, nv, dtype)
        expected_kv, expected_lengths = oracle_spans(kv, lengths, slots, present, keep)
        vis_start = slots[:, 0].clone()
        ref = [t.clone() for t in (kv, lengths, present)]
        ops.compact_kv_reference(ref[0], ref[1], vis_start, ref[2], keep, slots)
        got = [t.clone().to(device) for t in (kv, lengths, present)]
        ops.compact_kv_(got[0], got[1], vis_start.to(device), got[2], keep.to(device),
                        vis_slots=slots.to(device))
        for name, (g_kv, g_len, g_present) in (("kernel", [t.cpu() for t in got]), ("reference", ref)):
            assert torch.equal(g_len, expected_lengths), name
            assert torch.equal(g_present, present & keep), name
            for b in range(B):
                new, old = int(expected_lengths[b]), int(lengths[b])
                assert torch.equal(g_kv[:, :, b, :, :new], expected_kv[:, :, b, :, :new]), name
                assert (g_kv[:, :, b, :, old:] == SENTINEL).all(), f"{name} wrote past the length"


def test_a_contiguous_slot_table_is_the_single_span_case(device):
    gen = torch.Generator().manual_seed(5)
    kv, lengths, vs, present, keep = make_case(gen, 2, 3, 2, 40, 8, 20, torch.float32)
    table = vs[:, None] + torch.arange(20)
    a = [t.clone().to(device) for t in (kv, lengths, present)]
    b = [t.clone().to(device) for t in (kv, lengths, present)]
    ops.compact_kv_(a[0], a[1], vs.to(device), a[2], keep.to(device))
    ops.compact_kv_(b[0], b[1], vs.to(device), b[2], keep.to(device), vis_slots=table.to(device))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_visual_slots_raise_and_change_nothing(device):
    kv = torch.randn(1, 2, 1, 1, 10, 4, device=device)
    lengths = torch.tensor([9], device=device)
    present = torch.tensor([[True, True, True]], device=device)
    keep = torch.tensor([[True, False, True]], device=device)
    for slots, message in (([2, 5, 5], "strictly increasing"), ([2, 5, 9], "below lengths"),
                           ([-1, 3, 4], ">= 0")):
        before = [t.clone() for t in (kv, lengths, present)]
        with pytest.raises(ValueError, match=message):
            ops.compact_kv_(kv, lengths, lengths * 0, present, keep,
                            vis_slots=torch.tensor([slots], device=device))
        assert all(torch.equal(t, b) for t, b in zip((kv, lengths, present), before))
    with pytest.raises(ValueError, match="vis_slots must be"):
        ops.compact_kv_(kv, lengths, lengths * 0, present, keep,
                        vis_slots=torch.tensor([[1, 2]], device=device))


def test_opcheck_with_visual_slots(device):
    gen = torch.Generator().manual_seed(7)
    kv, lengths, slots, present, keep = make_spans_case(gen, 2, 2, 2, 30, 8, 12, torch.float32)
    args = tuple(t.to(device) for t in (kv, lengths, slots[:, 0].clone(), present, keep, slots))
    torch.library.opcheck(torch.ops.dyrate.compact_kv_.default, args)
