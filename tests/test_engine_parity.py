"""Dense decoding of the engine equals transformers' greedy generate, token for token."""
import pytest
import torch
from transformers import LlavaForConditionalGeneration

from dyrate_engine import Engine
from dyrate_engine.ops.prefill_linear import ONEDNN_PACKING
from tiny_models import build_tiny_llava, hf_greedy, multi_image_prompts, random_prompts

BACKBONES = {
    "llama-gqa": dict(kind="llama", kv_heads=2),
    "llama-mha-bias": dict(kind="llama", kv_heads=4, attention_bias=True, mlp_bias=True),
    "llama-llama3-rope": dict(kind="llama", rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "mistral-window": dict(kind="mistral", kv_heads=1, sliding_window=12),
    "qwen2": dict(kind="qwen2", kv_heads=2),
    "llama-tied": dict(kind="llama", tie_word_embeddings=True),
}


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def checkpoint(request, tmp_path_factory):
    path = build_tiny_llava(tmp_path_factory.mktemp(request.param), **BACKBONES[request.param])
    hf = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    return Engine.from_pretrained(path), hf


@pytest.mark.parametrize("decode_step", ["dynamic", "static"])
@pytest.mark.parametrize("batch", [1, 3])
def test_dense_greedy_equals_transformers(checkpoint, batch, decode_step):
    engine, hf = checkpoint
    engine = Engine(engine.model, decode_step=decode_step)
    ids, pixels = random_prompts(batch)
    expected_tokens, expected_logits = hf_greedy(hf, ids, pixels, max_new_tokens=12)
    results = engine.generate_ids(ids, pixels, max_new_tokens=12, output_logits=True)
    for r, tokens, logits in zip(results, expected_tokens, expected_logits):
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)


def test_prompts_longer_than_a_decode_step_equal_transformers(checkpoint):
    """Prompts of more than DECODE_ROWS tokens: the prefill's linears run through the weights'
    oneDNN-packed copies (the CPU default), with transformers' tokens and logits."""
    engine, hf = checkpoint
    assert len(engine.decoder.prefill_packed) == (4 * engine.decoder.n_layers + 1) * ONEDNN_PACKING
    ids, pixels = random_prompts(2, seed=9, lengths=(80, 66, 0), tails=(3, 12, 0))
    expected_tokens, expected_logits = hf_greedy(hf, ids, pixels, max_new_tokens=8)
    results = engine.generate_ids(ids, pixels, max_new_tokens=8, output_logits=True)
    for r, tokens, logits in zip(results, expected_tokens, expected_logits):
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)


def test_sequence_alone_equals_sequence_in_batch(checkpoint):
    engine, _ = checkpoint
    ids, pixels = random_prompts(3, seed=5)
    together = engine.generate_ids(ids, pixels, max_new_tokens=10)
    for b in range(3):
        alone = engine.generate_ids([ids[b]], pixels[b:b + 1], max_new_tokens=10)
        assert alone[0].token_ids == together[b].token_ids


@pytest.mark.parametrize("decode_step", ["dynamic", "static"])
@pytest.mark.parametrize("images", [[2], [1, 3, 2]])
def test_several_images_per_prompt_equal_transformers(checkpoint, images, decode_step):
    """Two or three images in one prompt with text between them, and a ragged batch mixing
    counts: the same tokens and logits as transformers."""
    engine, hf = checkpoint
    engine = Engine(engine.model, decode_step=decode_step)
    ids, pixels = multi_image_prompts(images)
    expected_tokens, expected_logits = hf_greedy(hf, ids, pixels, max_new_tokens=10)
    results = engine.generate_ids(ids, pixels, max_new_tokens=10, output_logits=True)
    for r, tokens, logits, n in zip(results, expected_tokens, expected_logits, images):
        assert r.token_ids == tokens and r.stats.n_visual == n * 16
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)


def test_prefill_skips_the_last_layers_other_rows(checkpoint, monkeypatch):
    """The last layer's prefill computes the last token's query and output only (every token's
    key and value): the same logits (to rounding) and tokens as computing every row, and the
    cache the decode reads is the same."""
    import functools

    from dyrate_engine.engine import prefill as prefill_module
    from dyrate_engine.engine import runner

    engine, _ = checkpoint
    ids, pixels = random_prompts(3, seed=6)
    shapes = []

    def recording(*args, **kwargs):
        h, q = runner.prefill_layers(*args, **kwargs)
        shapes.append((args[5], h.shape[1]))
        return h, q

    dec = engine.decoder
    products = []  # (weight, rows) of the decoder's linears
    linear = dec.linear
    monkeypatch.setattr(dec, "linear", lambda x, weight, bias=None: (
        products.append((weight, x.shape[:-1].numel())), linear(x, weight, bias))[1])
    monkeypatch.setattr(prefill_module, "prefill_layers", recording)
    short = engine.generate_ids(ids, pixels, max_new_tokens=6, output_logits=True)
    last = [rows for layers, rows in shapes if dec.n_layers - 1 in layers]
    assert last == [1, 1, 1]
    top, prompts = dec.layers[-1], sorted(len(i) for i in ids)
    assert not [rows for w, rows in products if w is top.qkv and rows in prompts]  # decode's only
    assert [rows for w, rows in products if w is top.q] == [1, 1, 1]
    assert sorted(rows for w, rows in products if w is top.kv) == prompts
    monkeypatch.setattr(dec, "linear", linear)
    monkeypatch.setattr(prefill_module, "prefill_layers",
                        functools.partial(runner.prefill_layers, last_row_only=False))
    full = engine.generate_ids(ids, pixels, max_new_tokens=6, output_logits=True)
    for a, b in zip(short, full):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
