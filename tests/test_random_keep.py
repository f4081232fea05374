"""The random-keep baseline: its ranking ignores the attention, is uniform over the visual
positions across seeds, and the engine keeps exactly the tokens it ranks first."""
import pytest
import torch

from dyrate_engine import Engine, RandomKeep, Schedule
from dyrate_engine.policies import MonitorStats, parse_policy
from dyrate_engine.policies.random_keep import uniform_hash
from tiny_models import build_tiny_llava, random_prompts


def stats_with(scores):
    n = torch.full((scores.shape[0],), scores.shape[1])
    return MonitorStats(0, scores, torch.zeros(scores.shape[0], 2, 4), n, n)


def test_ranking_ignores_attention_and_differs_by_seed():
    a, b = torch.rand(2, 50), torch.rand(2, 50)
    policy = RandomKeep([0.5], seed=4)
    assert torch.equal(policy.ranking(stats_with(a)), policy.ranking(stats_with(b)))
    assert not torch.equal(policy.ranking(stats_with(a)),
                           RandomKeep([0.5], seed=5).ranking(stats_with(a)))
    assert torch.equal(policy.rates(stats_with(a)), Schedule([0.5]).rates(stats_with(a)))


def test_uniform_over_positions_across_seeds():
    """Keeping the top half by the hash: every position is kept by about half the seeds."""
    n, seeds = 64, 400
    kept = torch.zeros(n)
    for seed in range(seeds):
        scores = uniform_hash(torch.arange(n), seed)
        kept[scores.topk(n // 2).indices] += 1
    share = kept / seeds
    # binomial sd of a share over 400 seeds is 0.025: 5 sd either side
    assert share.min() > 0.375 and share.max() < 0.625, share
    assert len(set(uniform_hash(torch.arange(4096), 0).tolist())) > 4000  # few ties


def test_spelling_and_bad_seed():
    policy = parse_policy("random:2:0.25,0.75:7")
    assert isinstance(policy, RandomKeep) and policy.seed == 7 and policy.prune_layer == 2
    assert policy.rate_list == [0.25, 0.75] and policy.name == "random(K=2,0.25,0.75,seed=7)"
    assert parse_policy("random:3:0.5").seed == 0
    for bad in (-1, True, 2**32, 1.0):
        with pytest.raises(ValueError, match="seed"):
            RandomKeep([0.5], seed=bad)
    with pytest.raises(ValueError, match="bad policy"):
        parse_policy("random:3:0.5:x")


def test_engine_keeps_what_the_ranking_puts_first(tmp_path, monkeypatch):
    """The engine's selection reads the policy's ranking, not the attention: the prefill keeps
    exactly the hash's top tokens (captured at select_keep), and the answer differs from an
    attention-ranked schedule at the same rate."""
    from dyrate_engine import ops
    engine = Engine.from_pretrained(build_tiny_llava(tmp_path, layers=4))
    ids, pixels = random_prompts(2, seed=5)
    seen = []
    real = ops.select_keep
    def recording(s, p, n, **kw):
        keep = real(s, p, n, **kw)
        seen.append((s, p, n, keep))
        return keep

    monkeypatch.setattr(ops, "select_keep", recording)
    policy = RandomKeep([0.5], prune_layer=2, seed=1)
    random_run = engine.generate_ids(ids, pixels, policy=policy, max_new_tokens=6,
                                     output_logits=True)
    scores, present, n_keep, keep = seen[0]
    want = uniform_hash(torch.arange(scores.shape[1]), 1)
    for b in range(2):
        assert torch.equal(scores[b], want)
        assert int(n_keep[b]) == 8  # ceil(0.5 * 16)
        assert keep[b].nonzero()[:, 0].tolist() == sorted(want.topk(8).indices.tolist())
    monkeypatch.setattr(ops, "select_keep", real)
    attention_run = engine.generate_ids(ids, pixels, policy=Schedule([0.5], prune_layer=2),
                                        max_new_tokens=6, output_logits=True)
    assert any(not torch.equal(r.logits, a.logits) for r, a in zip(random_run, attention_run))


def test_a_ramp_is_named_by_its_ends_not_every_rate():
    ramp = parse_policy("ramp:3:0.5:0.9:40")
    assert ramp.name == "ramp(K=3,0.5->0.9@40)" and len(ramp.rate_list) == 41
    assert ramp.rate_list[0] == 0.5 and abs(ramp.rate_list[-1] - 0.9) < 1e-12
