"""End-to-end predictor training: gradients through the Gumbel-Softmax, the masking
forward equal to the engine's physical pruning, the λ knob, and export -> engine parity."""
import pytest
import torch

from dyrate_engine import DyRate, Engine, Schedule
from dyrate_engine.predictor import RatePredictor, save_predictor
from dyrate_engine.train import Example, TrainConfig, collate, teacher_forced_rates
from dyrate_engine.train import evaluate, train_predictor
from dyrate_engine.train.masked_forward import embed, keep_masks, monitor_pass, pruned_pass
from dyrate_engine.train.trainer import masked_loss
from tiny_models import build_tiny_llava, multi_image_prompts, random_prompts

K = 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("m"), layers=4))


@pytest.fixture(scope="module")
def examples():
    ids, pixels = random_prompts(16, seed=5)
    g = torch.Generator().manual_seed(0)
    return [Example(i, torch.cat([torch.randint(3, 120, (int(n),), generator=g),
                                  torch.tensor([2])]), p)
            for i, p, n in zip(ids, pixels, torch.randint(3, 9, (16,), generator=g))]


def test_gradients_reach_the_predictor_through_the_sampled_masks(engine, examples):
    torch.manual_seed(0)
    predictor = RatePredictor(engine.decoder.n_heads)
    batch = collate(examples[:4], engine.model)
    with torch.enable_grad():  # lam = 0: the only path is CE -> attention masks -> y_soft
        loss, _ = masked_loss(engine.model, predictor, batch, TrainConfig(prune_layer=K, lam=0.0),
                              tau=1.0)
        loss.backward()
    grad = predictor.linear.weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in engine.model.hf.parameters())  # the VLM stays frozen


@pytest.mark.parametrize("images", [None, [2, 1, 3]])
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.75, 1.0])
def test_hard_masking_forward_equals_physical_pruning(engine, rate, images):
    """Rows use the step-0 keep set throughout: exactly what Schedule([rate]) does in the engine
    (prefill pruning, then no change), so the logits of every answer row must match; with one
    image per prompt, and with several (text between them)."""
    if images is None:
        ids, pixels = random_prompts(3, seed=9)
        own = [p[None] for p in pixels]
    else:
        ids, pixels = multi_image_prompts(images, seed=9)
        own = list(torch.split(pixels, images))
    results = engine.generate_ids(ids, pixels, policy=Schedule([rate], prune_layer=K),
                                  max_new_tokens=6, output_logits=True)
    batch = collate([Example(i, torch.tensor(r.token_ids), p)
                     for i, p, r in zip(ids, own, results)], engine.model)
    with torch.no_grad():
        h, _, scores = monitor_pass(engine.decoder, embed(engine.model, batch), batch, K)
        masks = keep_masks(scores, batch.n_visual, [rate])  # [B, T, 1, Nv]
        first = (batch.prompt_len - 1)[:, None, None, None].expand_as(masks)
        logits = pruned_pass(engine.decoder, h, batch, K, masks.gather(1, first),
                             torch.ones(masks.shape[:3]))
    for b, r in enumerate(results):
        start = int(batch.prompt_len[b]) - 1
        rows = logits[b, start:start + len(r.token_ids)]
        torch.testing.assert_close(rows, r.logits, atol=1e-4, rtol=0)
        kept = int(masks[b, start, 0].sum())
        assert kept == r.stats.kept_visual[0]


def test_precomputed_frozen_layers_give_the_same_loss(engine, examples):
    from dyrate_engine.train.trainer import precompute_monitor

    torch.manual_seed(2)
    predictor = RatePredictor(engine.decoder.n_heads)
    cfg = TrainConfig(prune_layer=K)
    chunk = examples[3:8]  # ragged lengths: padding differs from the precompute batches
    cached = precompute_monitor(engine.model, examples, K, batch_size=3)[3:8]
    with torch.no_grad():
        _, direct = masked_loss(engine.model, predictor, collate(chunk, engine.model), cfg,
                                tau=None)
        _, fast = masked_loss(engine.model, predictor, collate(cached, engine.model), cfg,
                              tau=None)
    assert fast == pytest.approx(direct, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def trained(engine, examples):
    out = {}
    for lam in (0.0, 3.0):
        cfg = TrainConfig(prune_layer=K, lam=lam, steps=200, batch_size=6, lr=0.05, seed=1)
        out[lam] = (train_predictor(engine.model, examples[:12], cfg, progress=False), cfg)
    return out


def test_training_lowers_the_loss(trained):
    history = trained[3.0][1].history
    first = sum(h["loss"] for h in history[:20]) / 20
    last = sum(h["loss"] for h in history[-20:]) / 20
    assert last < first - 0.05


def test_larger_lambda_picks_higher_rates_on_held_out_data(engine, examples, trained):
    held_out = examples[12:]
    low = evaluate(engine.model, trained[0.0][0], held_out, trained[0.0][1])
    high = evaluate(engine.model, trained[3.0][0], held_out, trained[3.0][1])
    assert high["hard_rate"] > low["hard_rate"] + 0.2
    assert high["flops"] < low["flops"]


def _random_predictor(n_heads):
    torch.manual_seed(4)
    p = RatePredictor(n_heads)
    with torch.no_grad():
        p.linear.weight.mul_(40.0)  # a predictor whose choice changes from step to step
    return p


@pytest.mark.parametrize("which", ["trained", "random"])
def test_exported_predictor_gives_the_training_time_rates_in_the_engine(
        engine, trained, tmp_path, which):
    predictor = trained[3.0][0] if which == "trained" else _random_predictor(engine.decoder.n_heads)
    save_predictor(tmp_path, predictor, prune_layer=K, text_config=engine.decoder.config)
    policy = DyRate.from_pretrained(tmp_path)
    ids, pixels = random_prompts(3, seed=21)
    results = engine.generate_ids(ids, pixels, policy=policy, max_new_tokens=10, ignore_eos=True)
    batch = collate([Example(i, torch.tensor(r.token_ids), p)
                     for i, p, r in zip(ids, pixels, results)], engine.model)
    expected = teacher_forced_rates(engine.model, predictor, batch, K)
    seen = set()
    for r, rates in zip(results, expected):
        assert r.stats.rates == pytest.approx(rates)
        seen.update(rates)
    if which == "random":
        assert len(seen) > 1


@pytest.mark.parametrize("rate", [0.5, 0.75])
def test_prefill_ranking_loss_is_the_engine_loss_for_a_constant_rate(engine, rate):
    """ranking='prefill' trains on exactly what the engine computes: with the predictor pinned
    to one rate, the teacher-forced CE equals the CE of the engine's own Schedule([rate]) logits
    on the same tokens."""
    import torch.nn.functional as F

    ids, pixels = random_prompts(3, seed=13)
    results = engine.generate_ids(ids, pixels, policy=Schedule([rate], prune_layer=K),
                                  max_new_tokens=5, output_logits=True)
    examples = [Example(i, torch.tensor(r.token_ids), p) for i, p, r in zip(ids, pixels, results)]
    rates = (0.0, rate)
    pinned = RatePredictor(engine.decoder.n_heads, rates)
    torch.nn.init.zeros_(pinned.linear.weight)
    with torch.no_grad():
        pinned.linear.bias.copy_(torch.tensor([0.0, 5.0]))
    cfg = TrainConfig(prune_layer=K, rates=rates, lam=0.0, ranking="prefill")
    with torch.no_grad():
        _, metrics = masked_loss(engine.model, pinned, collate(examples, engine.model), cfg,
                                 tau=None)
    logits = torch.cat([r.logits for r in results])
    targets = torch.cat([torch.tensor(r.token_ids) for r in results])
    assert metrics["ce"] == pytest.approx(float(F.cross_entropy(logits, targets)), abs=1e-4)
    cfg.ranking = "step"  # each row's own ranking reads tokens the engine dropped: not equal
    with torch.no_grad():
        _, per_step = masked_loss(engine.model, pinned, collate(examples, engine.model), cfg,
                                 tau=None)
    assert per_step["ce"] != pytest.approx(metrics["ce"], abs=1e-4)


@pytest.mark.parametrize("rate", [0.5, 0.75])
def test_cost_tables_count_what_the_engine_spends(engine, rate):
    """Each answer row's cost under a rate equals the engine's own count of that step under
    Schedule([rate]): its FLOPs, or the keys and values it reads (none for the prefill)."""
    from dyrate_engine.eval.harness import kv_reads_of
    from dyrate_engine.train.costs import cost_table

    ids, pixels = random_prompts(3, seed=17)
    results = engine.generate_ids(ids, pixels, policy=Schedule([rate], prune_layer=K),
                                  max_new_tokens=6, ignore_eos=True)
    batch = collate([Example(i, torch.tensor(r.token_ids), p)
                     for i, p, r in zip(ids, pixels, results)], engine.model)
    rates, L = (0.0, rate), engine.decoder.n_layers
    flops, flops_dense = cost_table("flops", engine.decoder, batch, K, rates)
    kv, kv_dense = cost_table("kv", engine.decoder, batch, K, rates)
    for b, r in enumerate(results):
        P = int(batch.prompt_len[b])
        rows = slice(P - 1, P - 1 + len(r.token_ids))
        assert flops[b, rows, 1].tolist() == r.stats.flops
        assert flops_dense[b, rows].tolist() == r.stats.dense_flops
        read = [0] + [K * dense + (L - K) * kept for dense, kept in r.stats.cache_lengths[1:]]
        assert kv[b, rows, 1].tolist() == read and kv[b, P - 1].tolist() == [0, 0]
        assert kv_dense[b, rows].tolist() == [0] + [L * d for d, _ in r.stats.cache_lengths[1:]]
        assert kv[b].sum() == kv[b, rows].sum()  # nothing outside the answer rows
        assert kv_reads_of(engine.decoder, r.stats, K) == (kv[b, :, 1].sum(), kv_dense[b].sum())
    with pytest.raises(ValueError, match="cost must be one of"):
        cost_table("time", engine.decoder, batch, K, rates)
