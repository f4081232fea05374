"""Property tests of the pruning ops and decode attention against their readable references:
random ragged batches, lengths 0 / 1 / capacity, visual spans at the start and the end,
everything or nothing pruned, ties, fp32 / bf16 / fp16, strided views, int32 and int64 indices."""
import torch
from hypothesis import given, strategies as st

from dyrate_engine import ops
from conftest import poison_allocator
from op_strategies import (PROPERTY, dtypes, index_dtypes, lengths_in, one_span_rows, randn,
                           several_span_rows, strided)

SCORE_TOL = dict(atol=1e-5, rtol=1e-4)
ATTENTION_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _heads(data):
    hkv = data.draw(st.integers(1, 3), label="kv heads")
    return hkv * data.draw(st.integers(1, 3), label="group"), hkv


@PROPERTY
@given(data=st.data())
def test_attention_scores_matches_reference(data):
    dtype, index = data.draw(dtypes), data.draw(index_dtypes)
    B, (H, hkv) = data.draw(st.integers(1, 4)), _heads(data)
    D, cap = data.draw(st.sampled_from([1, 4, 8, 20])), data.draw(st.integers(1, 24))
    several = data.draw(st.booleans(), label="several spans")
    max_vis = data.draw(st.integers(0, cap))
    rows = data.draw((several_span_rows if several else one_span_rows)(B, cap, max_vis))
    lengths, vis_start, vis_len, prompt_len = rows[:4]
    vis_slots = rows[4] if several else None
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    q = strided(randn(gen, B, H, D, dtype=dtype), 1, data.draw(st.integers(0, 2)))
    k = strided(randn(gen, B, hkv, cap, D, dtype=dtype), 2, data.draw(st.integers(0, 3)))
    for b in range(B):  # stale slots past each length must never be read
        k[b, :, int(lengths[b]):] = float("nan")
    poison_allocator("cpu")
    vis, mass = ops.attention_scores(
        q, k, lengths.to(index), vis_start.to(index), vis_len.to(index), prompt_len.to(index),
        max_vis=max_vis, vis_slots=None if vis_slots is None else vis_slots.to(index))
    ref_vis, ref_mass = ops.attention_scores_reference(
        q, k.nan_to_num(0.0), lengths, vis_start, vis_len, prompt_len, None, max_vis, vis_slots)
    torch.testing.assert_close(vis, ref_vis, **SCORE_TOL)
    torch.testing.assert_close(mass, ref_mass, **SCORE_TOL)
    assert not vis.isnan().any() and not mass.isnan().any()


@PROPERTY
@given(data=st.data())
def test_select_keep_matches_reference(data):
    B, nv = data.draw(st.integers(1, 4)), data.draw(st.integers(0, 30))
    values = st.sampled_from([-float("inf"), -1.0, 0.0, 0.5, 2.0, float("inf")])  # many ties
    scores = torch.tensor(data.draw(st.lists(values, min_size=B * nv, max_size=B * nv)),
                          dtype=torch.float32).view(B, nv).to(data.draw(dtypes))
    mode = data.draw(st.sampled_from(["random", "all", "none"]))
    present = torch.tensor(data.draw(st.lists(st.booleans(), min_size=B * nv,
                                              max_size=B * nv)), dtype=torch.bool).view(B, nv)
    if mode != "random":
        present[:] = mode == "all"
    n_keep = torch.tensor([data.draw(st.integers(0, int(p))) for p in present.sum(1)])
    if data.draw(st.booleans(), label="strided scores"):
        scores = strided(scores, 1, 3)
    keep = ops.select_keep(scores, present, n_keep.to(data.draw(index_dtypes)))
    assert torch.equal(keep, ops.select_keep_reference(scores.contiguous(), present, n_keep))
    assert torch.equal(keep.sum(1), n_keep) and not (keep & ~present).any()


@st.composite
def _cache_state(draw, B, cap, nv):
    """``(lengths, vis_start, present, vis_slots)`` of a cache that may already be pruned: the
    present tokens are where compaction leaves them (one span, or several spans through
    ``vis_slots``, each token at its original slot less the dropped tokens before it)."""
    several = draw(st.booleans())
    lengths, starts, presents, tables = [], [], [], []
    for _ in range(B):
        mode = draw(st.sampled_from(["random", "all pruned", "none pruned"]))
        bits = draw(st.lists(st.booleans(), min_size=nv, max_size=nv))
        bits = [mode == "none pruned"] * nv if mode != "random" else bits
        if several:
            original = draw(lengths_in(cap))
            slots = sorted(draw(st.lists(st.integers(0, max(original - 1, 0)), unique=True,
                                         min_size=min(nv, original), max_size=min(nv, original))))
            slots += [-1] * (nv - len(slots))
            bits = [bit and slot >= 0 for bit, slot in zip(bits, slots)]
            lengths.append(original - sum(slot >= 0 and not bit for bit, slot in zip(bits, slots)))
            starts.append(max(slots[0], 0) if nv else 0)
            tables.append(slots)
        else:
            length = draw(lengths_in(cap))
            while sum(bits) > length:
                bits[max(i for i, bit in enumerate(bits) if bit)] = False
            where = draw(st.sampled_from(["start", "end", "any"]))
            starts.append({"start": 0, "end": length - sum(bits)}.get(where)
                          if where != "any" else draw(st.integers(0, length - sum(bits))))
            lengths.append(length)
        presents.append(bits)
    present = torch.tensor(presents, dtype=torch.bool).view(B, nv)
    table = torch.tensor(tables, dtype=torch.long).view(B, nv) if several else None
    return torch.tensor(lengths), torch.tensor(starts), present, table


@PROPERTY
@given(data=st.data())
def test_compact_kv_matches_reference(data):
    B, cap, nv = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 20)), \
        data.draw(st.integers(0, 12))
    lengths, vis_start, present, vis_slots = data.draw(_cache_state(B, cap, nv))
    keep_mode = data.draw(st.sampled_from(["random", "keep all", "drop all"]))
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=B * nv, max_size=B * nv)),
                        dtype=torch.bool).view(B, nv)
    keep = present.clone() if keep_mode == "keep all" else keep & present
    keep = keep & False if keep_mode == "drop all" else keep
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    kv = randn(gen, 2, 2, B, data.draw(st.integers(1, 2)), cap, data.draw(st.sampled_from([1, 8])),
               dtype=data.draw(dtypes))
    index = data.draw(index_dtypes)
    got_kv, got_len, got_present = kv.clone(), lengths.clone().to(index), present.clone()
    ops.compact_kv_(got_kv, got_len, vis_start.to(index), got_present, keep,
                    vis_slots=None if vis_slots is None else vis_slots.to(index))
    ref_kv, ref_len, ref_present = kv.clone(), lengths.clone(), present.clone()
    ops.compact_kv_reference(ref_kv, ref_len, vis_start, ref_present, keep, vis_slots)
    assert got_len.dtype == index and torch.equal(got_len.long(), ref_len)
    assert torch.equal(got_present, ref_present) and torch.equal(got_present, present & keep)
    assert torch.equal(ref_len, lengths - (present & ~keep).sum(1))
    for b in range(B):  # the kept prefix is exact; slots past the old length are untouched
        new, old = int(ref_len[b]), int(lengths[b])
        assert torch.equal(got_kv[:, :, b, :, :new], ref_kv[:, :, b, :, :new])
        assert torch.equal(got_kv[:, :, b, :, old:], kv[:, :, b, :, old:])


@PROPERTY
@given(data=st.data())
def test_decode_attention_matches_reference(data):
    dtype, index = data.draw(dtypes), data.draw(index_dtypes)
    B, (H, hkv) = data.draw(st.integers(1, 4)), _heads(data)
    D, cap = data.draw(st.sampled_from([1, 4, 16, 40])), data.draw(st.integers(1, 24))
    lengths = torch.tensor([data.draw(lengths_in(cap)) for _ in range(B)])
    window = data.draw(st.one_of(st.none(), st.integers(1, cap + 1)))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    q = strided(randn(gen, B, H, D, dtype=dtype), 1, data.draw(st.integers(0, 2)))
    kv = strided(randn(gen, 2, B, hkv, cap, D, dtype=dtype), 3, data.draw(st.integers(0, 3)))
    for b in range(B):  # stale slots past each length must never be read
        kv[:, b, :, int(lengths[b]):] = float("nan")
    poison_allocator("cpu")
    out = ops.decode_attention(q, kv[0], kv[1], lengths.to(index), window=window)
    clean = kv.nan_to_num(0.0)
    ref = ops.decode_attention_reference(q, clean[0], clean[1], lengths, window=window)
    tol = ATTENTION_TOL[dtype]
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    assert torch.equal(out[lengths == 0], torch.zeros_like(out[lengths == 0]))


@PROPERTY
@given(data=st.data())
def test_decode_attention_monitor_equals_attention_and_scores(data):
    """The fused monitor pass equals decode_attention and attention_scores run apart (on the
    CPU: the monitor's reference against the two C++ kernels)."""
    dtype = data.draw(dtypes)
    B, (H, hkv) = data.draw(st.integers(1, 3)), _heads(data)
    D, cap = data.draw(st.sampled_from([4, 16])), data.draw(st.integers(1, 20))
    max_vis = data.draw(st.integers(0, cap))
    lengths, vis_start, vis_len, prompt_len, vis_slots = data.draw(
        several_span_rows(B, cap, max_vis))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16)))
    q = randn(gen, B, H, D, dtype=dtype)
    kv = randn(gen, 2, B, hkv, cap, D, dtype=dtype)
    rank = ops.visual_rank_table(vis_start, vis_len, vis_slots, cap, max_vis)
    index = data.draw(index_dtypes)
    out, vis, mass = ops.decode_attention_monitor(
        q, kv[0], kv[1], lengths.to(index), rank.to(index), vis_start.to(index),
        prompt_len.to(index), max_vis=max_vis)
    tol = ATTENTION_TOL[dtype]
    torch.testing.assert_close(out, ops.decode_attention(q, kv[0], kv[1], lengths),
                               atol=tol, rtol=tol)
    want_vis, want_mass = ops.attention_scores(q, kv[0], lengths, vis_start, vis_len, prompt_len,
                                               max_vis=max_vis, vis_slots=vis_slots)
    torch.testing.assert_close(vis, want_vis, **SCORE_TOL)
    torch.testing.assert_close(mass, want_mass, **SCORE_TOL)
