"""``ops.prefill_linear``: oneDNN-packed fp32 weights equal the product in fp64 for a prefill's
rows, are used only for more than ``DECODE_ROWS`` rows and current weights, and the engine packs
them at load where its options say so."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from conftest import RecordOps
from dyrate_engine import Engine
from dyrate_engine.bench.contenders import Contender
from dyrate_engine.ops.prefill_linear import (DECODE_ROWS, ONEDNN_PACKING, PrefillWeights,
                                              fits_in_memory)
from tiny_models import build_tiny_llava, random_prompts

pytestmark = pytest.mark.skipif(not ONEDNN_PACKING, reason="this torch build has no oneDNN")

PACKED_OP = "mkldnn._linear_pointwise.default"


def recording_fallback(calls):
    def fallback(x, weight, bias):
        calls.append(tuple(x.shape))
        return F.linear(x, weight.to(x.dtype), bias)
    return fallback


def expected(x, w, b):
    """The product in fp64, rounded once."""
    out = x.double() @ w.double().T
    return (out if b is None else out + b.double()).float()


@pytest.mark.parametrize("rows", [DECODE_ROWS + 1, 130, 609])
def test_packed_equals_fp64_product_for_prefill_rows(rows):
    gen = torch.Generator().manual_seed(rows)
    shapes = ((40, 24), (7, 24), (24, 33), (96, 64))
    weights = [torch.randn(n, k, generator=gen) for n, k in shapes]
    biases = {40: torch.randn(40, generator=gen), 24: torch.randn(24, generator=gen)}
    packed = PrefillWeights()
    packed.pack(weights)
    assert len(packed) == 4 and packed.nbytes == sum(w.numel() * 4 for w in weights)
    calls = []
    for w in weights:
        k = w.shape[1]
        wide = torch.randn(rows, 2 * k + 1, generator=gen)
        for x in (torch.randn(rows, k, generator=gen), torch.randn(1, rows, k, generator=gen),
                  torch.randn(2, rows // 2 + 1, k, generator=gen), wide[:, 1:2 * k + 1:2]):
            b = biases.get(w.shape[0])
            with RecordOps() as ops:
                out = packed.linear(x, w, b, recording_fallback(calls))
            assert PACKED_OP in ops.names and out.shape == (*x.shape[:-1], w.shape[0])
            torch.testing.assert_close(out, expected(x, w, b), atol=2e-5, rtol=1e-5)
    assert calls == []


def test_decode_rows_other_weights_dtypes_and_gradients_fall_back():
    gen = torch.Generator().manual_seed(0)
    w, other = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    packed = PrefillWeights()
    packed.pack([w])
    calls = []
    fallback = recording_fallback(calls)
    rows = DECODE_ROWS + 1
    packed.linear(torch.randn(DECODE_ROWS, 16), w, None, fallback)  # a decode step's rows
    packed.linear(torch.randn(2, DECODE_ROWS // 2, 16), w, None, fallback)
    packed.linear(torch.randn(rows, 16), other, None, fallback)  # not packed
    packed.linear(torch.randn(rows, 16), w.clone(), None, fallback)  # equal values, not the same
    packed.linear(torch.randn(rows, 16, dtype=torch.float64), w, None, fallback)
    x = torch.randn(rows, 16, requires_grad=True)
    packed.linear(x, w, None, fallback).sum().backward()  # autograd needs the plain path
    assert x.grad is not None and len(calls) == 6
    with torch.no_grad():
        packed.linear(x, w, None, fallback)
    assert len(calls) == 6


def test_a_weight_changed_in_place_is_not_multiplied_by_its_stale_copy():
    w = torch.randn(8, 16)
    packed = PrefillWeights()
    packed.pack([w])
    x = torch.randn(DECODE_ROWS + 3, 16)
    calls = []
    before = packed.linear(x, w, None, recording_fallback(calls))
    assert calls == []
    w.mul_(-2)  # a training step, a reload in place
    after = packed.linear(x, w, None, recording_fallback(calls))
    assert len(calls) == 1
    torch.testing.assert_close(after, -2 * before)
    packed.pack([w])  # repacked: the copy is current again
    torch.testing.assert_close(packed.linear(x, w, None, recording_fallback(calls)), after,
                               atol=1e-5, rtol=1e-5)
    assert len(calls) == 1


def test_pack_keeps_current_copies_releases_and_refuses_other_dtypes():
    w, v = torch.randn(8, 16), torch.randn(4, 16)
    packed = PrefillWeights()
    packed.pack([w, v])
    first = packed._packed[id(w)][2]
    packed.pack([w])
    assert packed._packed[id(w)][2] is first and len(packed) == 1  # v's copy replaced away
    assert packed.nbytes == w.numel() * 4
    packed.release()
    assert len(packed) == 0 and packed.nbytes == 0
    for bad in (w.bfloat16(), w[0], w.double()):
        with pytest.raises(ValueError, match="fp32 CPU matrices"):
            packed.pack([bad])


def test_a_compiled_caller_takes_the_fallback():
    """torch.compile cannot trace oneDNN's opaque copies: while tracing, the plain path."""
    w = torch.randn(8, 16)
    packed = PrefillWeights()
    packed.pack([w])
    calls = []
    fallback = recording_fallback(calls)
    step = torch.compile(lambda x: packed.linear(x, w, None, fallback), backend="eager",
                         fullgraph=True)
    x = torch.randn(DECODE_ROWS + 2, 16)
    torch.testing.assert_close(step(x), F.linear(x, w))
    assert calls == [(DECODE_ROWS + 2, 16)]  # recorded once, while tracing


def test_flop_counter_counts_the_packed_linear():
    w, b = torch.randn(24, 40), torch.randn(24)
    packed = PrefillWeights()
    packed.pack([w])
    x = torch.randn(3, 50, 40)
    with FlopCounterMode(display=False) as counter:
        packed.linear(x, w, b, F.linear)
    assert counter.get_total_flops() == 2 * 150 * 24 * 40


def test_fits_in_memory_reads_available_memory(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000 kB\nMemAvailable: 4000 kB\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        meminfo if path == "/proc/meminfo" else path, *a, **k))
    assert fits_in_memory(1000 * 1024) and not fits_in_memory(1001 * 1024)
    assert fits_in_memory(4000 * 1024, share=1.0) and not fits_in_memory(1, share=0.0)
    meminfo.write_text("MemTotal: 8000 kB\n")
    assert fits_in_memory(10 ** 15)  # unknown: packing is not refused


def test_engine_packs_the_layers_at_load_where_asked(tmp_path, monkeypatch):
    path = build_tiny_llava(tmp_path, layers=3, seed=2)
    engine = Engine.from_pretrained(path)
    dec = engine.decoder
    layer_bytes = sum(w.numel() * 4 for w in dec.prefill_weights())
    assert len(dec.prefill_packed) == 13 and dec.prefill_packed.nbytes == layer_bytes
    assert id(dec.lm_head) not in dec.prefill_packed._packed  # the prefill's logits: one row
    first = dec.prefill_packed._packed[id(dec.layers[0].qkv)][2]
    Engine(engine.model)  # another engine over the same weights: the copies are reused
    assert dec.prefill_packed._packed[id(dec.layers[0].qkv)][2] is first
    unpacked = Engine(engine.model, prefill_prepack=False)  # drops them: shared decoder
    assert len(dec.prefill_packed) == 0 and dec.prefill_packed.nbytes == 0
    # A bench contender on another decode step keeps the engine's choice, as a view does.
    Contender("dense@static", "Dense", "engine", decode_step="static").engine(unpacked)
    assert len(dec.prefill_packed) == 0
    assert unpacked.with_model(unpacked.model).prefill_prepack is False
    Engine(engine.model)
    monkeypatch.setattr("dyrate_engine.engine.engine.fits_in_memory", lambda nbytes: False)
    Engine(engine.model)  # "auto" with too little memory: no copies
    assert len(dec.prefill_packed) == 0
    Engine(engine.model, prefill_prepack=True)  # asked for: packed regardless
    assert len(dec.prefill_packed) == 13  # 4 per layer and the last layer's key/value rows
    with pytest.raises(ValueError, match="prefill_prepack must be"):
        Engine(engine.model, prefill_prepack="yes")
    bf16 = Engine.from_pretrained(path, dtype=torch.bfloat16, prefill_prepack="auto")
    assert len(bf16.decoder.prefill_packed) == 0
    with pytest.raises(ValueError, match="fp32 weights on the CPU"):
        Engine(bf16.model, prefill_prepack=True)


def test_engine_tokens_do_not_depend_on_prefill_packing(tmp_path):
    """Prompts longer than DECODE_ROWS: the packed prefill gives the plain one's tokens and
    logits, and its linears did run packed."""
    packed_engine = Engine.from_pretrained(build_tiny_llava(tmp_path, layers=3, seed=4))
    dec = packed_engine.decoder
    ids, pixels = random_prompts(3, seed=6, lengths=(70, 90, 61))
    with RecordOps() as ops:
        a = packed_engine.generate_ids(ids, pixels, max_new_tokens=6, output_logits=True)
    assert ops.names.count(PACKED_OP) == 3 * (4 * dec.n_layers - 3)  # last layer: k and v
    dec.prefill_packed.release()
    b = packed_engine.generate_ids(ids, pixels, max_new_tokens=6, output_logits=True)
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        torch.testing.assert_close(x.logits, y.logits, atol=1e-4, rtol=1e-4)
