"""Physical KV compaction equals masking the dropped tokens' keys (docs/DESIGN.md, invariants)."""
import pytest
import torch
import torch.nn.functional as F

from dyrate_engine import DyRate, Engine, FastV, RandomKeep, Schedule, ops
from dyrate_engine.models import flops
from dyrate_engine.models.llama import LlamaDecoder
from masked_reference import masked_generate
from tiny_models import build_tiny_llava, multi_image_prompts, random_prompts

POLICIES = {
    "schedule-0": lambda: Schedule([0.0], prune_layer=2),
    "schedule-1": lambda: Schedule([1.0], prune_layer=2),
    "schedule-0.75": lambda: Schedule([0.75], prune_layer=3),
    "schedule-non-monotone": lambda: Schedule([0.0, 0.5, 0.25, 0.9, 0.6, 1.0], prune_layer=2),
    "schedule-late": lambda: Schedule([0.0, 0.0, 0.0, 0.4, 0.7], prune_layer=3),
    "fastv": lambda: FastV(prune_layer=2, ratio=0.5),
    "fastv-k1": lambda: FastV(prune_layer=1, ratio=0.75),
    "random-rising": lambda: RandomKeep([0.25, 0.5, 0.5, 0.8], prune_layer=2, seed=3),
}


@pytest.fixture(scope="module", params=["llama", "qwen2", "llama-static"])
def engine(request, tmp_path_factory):
    """Every test runs on both decode steps (the static one on the Llama backbone)."""
    kind, _, step = request.param.partition("-")
    path = build_tiny_llava(tmp_path_factory.mktemp(kind), kind=kind, layers=4)
    return Engine.from_pretrained(path, decode_step=step or "dynamic")


def check_equal_to_masked(engine, policy_factory, batch, max_new_tokens=8):
    ids, pixels = random_prompts(batch, seed=11)
    results = engine.generate_ids(ids, pixels, policy=policy_factory(),
                                  max_new_tokens=max_new_tokens, output_logits=True)
    for b, r in enumerate(results):
        tokens, logits = masked_generate(engine, ids[b], pixels[b], policy_factory(),
                                         max_new_tokens, batch, b)
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)
    return results


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_pruned_engine_equals_masked_reference(engine, name):
    check_equal_to_masked(engine, POLICIES[name], batch=1)


def test_batch_with_different_rates_per_sequence(engine):
    table = torch.tensor([[0.0, 0.5, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0],
                          [0.25, 0.25, 0.0, 0.6, 0.6, 0.8, 0.8, 0.8],
                          [0.9, 0.1, 0.1, 0.1, 0.95, 0.95, 0.95, 0.95]])
    results = check_equal_to_masked(
        engine, lambda: DyRate(lambda stats: table[:, stats.step], prune_layer=2), batch=3)
    kept = [r.stats.kept_visual for r in results]
    assert kept[0][:4] == [16, 8, 8, 2] and kept[2][0] == 2 and kept[1][:2] == [12, 12]


def test_pruned_cache_is_really_shorter_and_attention_reads_only_it(engine, monkeypatch):
    if engine.options.step == "static":
        pytest.skip("the static step attends over the capacity; tests/test_static_step.py "
                    "checks what it reads")
    ids, pixels = random_prompts(1, seed=3)
    n = len(ids[0])
    key_lengths = []
    sdpa, decode_attention = F.scaled_dot_product_attention, ops.decode_attention

    def recording_sdpa(q, k, v, **kw):
        if kw.get("enable_gqa"):  # the decoder's calls, not the vision tower's
            key_lengths.append(k.shape[2])
        return sdpa(q, k, v, **kw)

    def recording_decode_attention(q, k, v, lengths, *args, **kw):  # the C++ kernel's path
        key_lengths.append(int(lengths[0]))
        return decode_attention(q, k, v, lengths, *args, **kw)

    def recording_causal_attention(q, k, v):  # the prefill's kernel path
        key_lengths.append(k.shape[2])
        return causal_attention(q, k, v)

    causal_attention = LlamaDecoder.causal_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    monkeypatch.setattr(ops, "decode_attention", recording_decode_attention)
    monkeypatch.setattr(LlamaDecoder, "causal_attention", staticmethod(recording_causal_attention))
    result = engine.generate_ids(ids, pixels, policy=Schedule([0.75], prune_layer=2),
                                 max_new_tokens=4)[0]
    assert result.stats.kept_visual == [4] * 4
    assert result.stats.cache_lengths == [(n + t, n - 12 + t) for t in range(4)]
    # prefill: 2 layers over n tokens, 2 over the n - 12 kept; then 4 layers per decode step
    assert key_lengths[:4] == [n, n, n - 12, n - 12]
    for t in range(1, 4):
        assert key_lengths[4 * t:4 * t + 4] == [n + t] * 2 + [n - 12 + t] * 2
    dense = engine.generate_ids(ids, pixels, max_new_tokens=4)[0]
    saved = [d - p for d, p in zip(dense.stats.flops[1:], result.stats.flops[1:])]
    assert saved == [2 * flops.attention_flops(engine.decoder, 12)] * 3


def test_bad_policy_layer_is_a_clear_error(engine):
    ids, pixels = random_prompts(1)
    with pytest.raises(ValueError, match="monitor layer"):
        engine.generate_ids(ids, pixels, policy=Schedule([0.5], prune_layer=4), max_new_tokens=2)


def test_dense_with_monitor_records_type_shares_and_equals_dense(engine):
    from dyrate_engine import Dense

    ids, pixels = random_prompts(2, seed=4)
    plain = engine.generate_ids(ids, pixels, max_new_tokens=6)
    watched = engine.generate_ids(ids, pixels, policy=Dense(prune_layer=2), max_new_tokens=6)
    for p, w in zip(plain, watched):
        assert p.token_ids == w.token_ids
        assert w.stats.kept_visual == [16] * len(w.token_ids)
        assert len(w.stats.type_mass) == len(w.token_ids)
        for shares in w.stats.type_mass:
            assert abs(sum(shares) - 1) < 1e-5 and shares[1] > 0
        assert w.stats.type_mass[0][3] == 0  # no response tokens yet at the prefill
        assert w.stats.type_mass[-1][3] > 0
    assert plain[0].stats.type_mass[0] == []  # no monitor, no cost


@pytest.mark.parametrize("name", ["schedule-0.75", "schedule-non-monotone", "fastv", "dyrate",
                                  "random-rising"])
def test_several_images_per_prompt_equal_masked_reference(engine, name):
    """Visual tokens in several runs with text between them: pruning at the prefill and while
    decoding equals the masked reference, in a ragged batch of 1, 3 and 2 images."""
    table = torch.tensor([[0.0, 0.3, 0.3, 0.8, 0.9, 0.9, 0.95, 0.95],
                          [0.5, 0.5, 0.2, 0.7, 0.7, 0.85, 0.85, 0.99],
                          [0.1, 0.6, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9]])
    make = {"dyrate": lambda: DyRate(lambda stats: table[:, stats.step], prune_layer=2),
            **POLICIES}[name]
    images = [1, 3, 2]
    ids, pixels = multi_image_prompts(images, seed=8)
    results = engine.generate_ids(ids, pixels, policy=make(), max_new_tokens=8,
                                  output_logits=True)
    first = 0
    for b, (r, n) in enumerate(zip(results, images)):
        tokens, logits = masked_generate(engine, ids[b], pixels[first:first + n], make(), 8, 3, b)
        first += n
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)
        assert r.stats.n_visual == 16 * n and r.stats.kept_visual[-1] < 16 * n
