"""``ops.packed_linear``: MKL-packed fp32 weights equal ``F.linear`` where they are used, are used
only where their row count matches, and the engine's tokens do not depend on them."""
import time

import pytest
import torch
import torch.nn.functional as F

from dyrate_engine import Engine, Schedule
from dyrate_engine.engine.static_step import MIN_PACKED_ROWS, DecodeOptions
from dyrate_engine.ops.packed_linear import MKL_PACKING, PackedWeights
from tiny_models import build_tiny_llava, random_prompts

pytestmark = pytest.mark.skipif(not MKL_PACKING, reason="this torch build has no MKL")


def recording_fallback(calls):
    def fallback(x, weight, bias):
        calls.append(x.shape)
        return F.linear(x, weight, bias)
    return fallback


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_packed_equals_linear_at_its_row_count(rows):
    gen = torch.Generator().manual_seed(rows)
    weights = [torch.randn(n, k, generator=gen) for n, k in ((40, 24), (7, 24), (24, 33))]
    bias = torch.randn(40, generator=gen)
    packed = PackedWeights()
    packed.pack(weights, rows)
    assert packed.row_counts == [rows] and packed.nbytes >= sum(w.numel() * 4 for w in weights)
    calls = []
    for w in weights:
        for shape in ((rows, w.shape[1]), (1, rows, w.shape[1]), (rows, 1, w.shape[1])):
            x = torch.randn(*shape, generator=gen)
            b = bias if w.shape[0] == 40 else None
            out = packed.linear(x, w, b, recording_fallback(calls))
            assert out.shape == (*shape[:-1], w.shape[0])
            torch.testing.assert_close(out, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    assert calls == []  # every call went through the packed copies


def test_other_rows_weights_dtypes_and_gradients_fall_back():
    gen = torch.Generator().manual_seed(0)
    w, other = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    packed = PackedWeights()
    packed.pack([w], 4)
    calls = []
    fallback = recording_fallback(calls)
    packed.linear(torch.randn(5, 16), w, None, fallback)  # another row count
    packed.linear(torch.randn(4, 16), other, None, fallback)  # a weight that was not packed
    packed.linear(torch.randn(4, 16), w.clone(), None, fallback)  # equal values, not the same
    x = torch.randn(4, 16, requires_grad=True)
    out = packed.linear(x, w, None, fallback)  # autograd needs the unpacked path
    out.sum().backward()
    assert x.grad is not None and len(calls) == 4
    with torch.no_grad():
        packed.linear(x, w, None, fallback)
    assert len(calls) == 4


def test_pack_replaces_releases_and_refuses_other_dtypes():
    w = torch.randn(8, 16)
    packed = PackedWeights()
    packed.pack([w], 2)
    first = packed._packed[(2, id(w))][1]
    packed.pack([w], 2)
    assert packed._packed[(2, id(w))][1] is first  # already packed for 2 rows: kept
    packed.pack([w], 3)
    assert packed.row_counts == [3] and packed._packed[(3, id(w))][1] is not first
    one_count = packed.nbytes
    packed.pack([w], 5, keep_others=True)
    assert packed.row_counts == [3, 5] and packed.nbytes > one_count
    calls = []
    for rows in (3, 5, 4):
        packed.linear(torch.randn(rows, 16), w, None, recording_fallback(calls))
    assert calls == [(4, 16)]  # both kept counts served; 4 rows fell back
    packed.release()
    assert packed.row_counts == [] and packed.nbytes == 0 and not packed._packed
    with pytest.raises(ValueError, match="fp32 CPU matrices"):
        packed.pack([w.bfloat16()], 2)
    with pytest.raises(RuntimeError, match="rows >= 1"):
        packed.pack([w], 0)


def test_engine_tokens_do_not_depend_on_packing(tmp_path):
    packed_engine = Engine.from_pretrained(build_tiny_llava(tmp_path, layers=4, seed=3),
                                           prepack=True)
    plain_engine = Engine(packed_engine.model, prepack=False)
    ids, pixels = random_prompts(3, seed=5)
    dec = packed_engine.decoder
    for policy in (None, Schedule([0.5], prune_layer=2)):
        a = packed_engine.generate_ids(ids, pixels, policy=policy, max_new_tokens=6,
                                       output_logits=True)
        assert dec.packed.row_counts == [3] and dec.packed.nbytes > 0
        b = plain_engine.generate_ids(ids, pixels, policy=policy, max_new_tokens=6,
                                      output_logits=True)
        assert dec.packed.row_counts == []  # prepack=False drops another engine's copies
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids
            torch.testing.assert_close(x.logits, y.logits, atol=1e-4, rtol=1e-4)


def test_packing_is_kept_only_where_it_measured_faster(monkeypatch):
    """The verdict is measured at a row count's first pack, then remembered: a losing row
    count is neither kept nor measured again."""
    from dyrate_engine.ops import packed_linear
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(48, 32, generator=g), torch.randn(32, 48, generator=g)]
    measured = []

    def slow(x, w, b):  # an unpacked path that always loses
        time.sleep(0.002)
        return F.linear(x, w, b)

    real = packed_linear.packed_is_faster
    monkeypatch.setattr(packed_linear, "packed_is_faster",
                        lambda *a, **kw: measured.append(a[2]) or real(*a, **kw))
    packed = PackedWeights()
    assert packed.pack_where_faster(weights, 4, slow) and packed.row_counts == [4]
    assert not packed.pack_where_faster(weights, 2, lambda x, w, b: x[:, :0])  # instant
    assert packed.row_counts == [] and packed.nbytes == 0  # not kept, and 4's copies dropped
    assert packed.pack_where_faster(weights, 4, slow, keep_others=True)
    assert not packed.pack_where_faster(weights, 2, slow, keep_others=True)
    assert packed.row_counts == [4] and packed.faster == {4: True, 2: False}
    assert measured == [4, 2]  # once per row count


def test_batch_sizes_declared_are_packed_at_load_and_kept(tmp_path, monkeypatch):
    from dyrate_engine.ops import packed_linear
    monkeypatch.setattr(packed_linear, "packed_is_faster", lambda *args: True)
    path = build_tiny_llava(tmp_path, layers=3, seed=4)
    engine = Engine.from_pretrained(path, prepack=[3, 2, 3])
    dec = engine.decoder
    assert engine.options.prepack == (2, 3) and dec.packed.row_counts == [2, 3]
    plain = Engine.from_pretrained(path, prepack=False)
    for n in (3, 1, 2):
        ids, pixels = random_prompts(n, seed=6)
        got = engine.generate_ids(ids, pixels, max_new_tokens=4)
        assert dec.packed.row_counts == [2, 3]  # an undeclared size falls back, keeps them
        want = plain.generate_ids(ids, pixels, max_new_tokens=4)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]
    with pytest.raises(ValueError, match="packs fp32 weights on the CPU"):
        Engine.from_pretrained(path, dtype=torch.bfloat16, prepack=(2,))


def test_prepack_option_is_checked():
    with pytest.raises(ValueError, match="prepack must be"):
        DecodeOptions(prepack="yes")
    for bad in ((), (0,), ("8",), (True,)):
        with pytest.raises(ValueError, match="batch sizes must be integers >= 1"):
            DecodeOptions(prepack=bad)
    with pytest.raises(ValueError, match="does not combine with compile"):
        DecodeOptions(prepack=(8,), compile=True)
    assert DecodeOptions(prepack=(8,)).packs(torch.device("cpu"), torch.float32, 8)
    assert not DecodeOptions(prepack=(8,)).packs(torch.device("cpu"), torch.float32, 16)
    with pytest.raises(ValueError, match="does not combine with compile"):
        DecodeOptions(prepack=True, compile=True)
    cpu, fp32 = torch.device("cpu"), torch.float32
    assert not DecodeOptions(compile=True).packs(cpu, fp32, MIN_PACKED_ROWS)
    assert DecodeOptions().packs(cpu, fp32, MIN_PACKED_ROWS)
    assert not DecodeOptions().packs(cpu, fp32, MIN_PACKED_ROWS - 1)  # too few rows to pay
    assert DecodeOptions(prepack=True).packs(cpu, fp32, 1)
    assert not DecodeOptions().packs(cpu, torch.bfloat16, MIN_PACKED_ROWS)
    assert not DecodeOptions(prepack=False).packs(cpu, fp32, MIN_PACKED_ROWS)
