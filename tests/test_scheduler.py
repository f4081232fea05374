"""Continuous batching: requests that join and leave a running batch get exactly the answer they
get alone (greedy, and sampled with a seed), whatever shares the batch; slots are reused; the
queue is bounded; cancelling frees a slot at the next step; bad requests fail before any work."""
import copy

import pytest
import torch

from dyrate_engine import DyRate, Engine, FastV, RandomKeep, Schedule
from dyrate_engine.engine.sampling import SamplingParams
from dyrate_engine.engine.handles import QueueFull, Request
from dyrate_engine.predictor import RatePredictor
from tiny_models import build_tiny_llava, multi_image_prompts, random_prompts

K = 2  # the tiny model's 3 layers: monitor layer 1, pruned layer 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("tiny"), layers=3,
                                                   seed=7))


def policies(n_heads):
    torch.manual_seed(3)
    predictor = RatePredictor(n_heads).eval()
    return [None, Schedule([0.5], prune_layer=K), FastV(K, ratio=0.75),
            Schedule([0.0, 0.25, 0.5, 0.75], prune_layer=K),  # monitors every decode step
            DyRate(predictor, prune_layer=K), RandomKeep([0.25, 0.5, 0.75], prune_layer=K)]


def alone(engine, ids, pixels, policy, params):
    result, = engine.generate_ids([ids], pixels[None], policy=copy.deepcopy(policy),
                                  sampling_params=params)
    return result


@pytest.mark.parametrize("max_batch", [1, 3])
def test_answers_equal_the_request_run_alone(engine, max_batch):
    ids, pixels = random_prompts(9, seed=11)
    pols = policies(engine.decoder.n_heads)
    lengths = [3, 9, 1, 6, 12, 4, 8, 2, 10]
    requests = [Request(ids[i], {"pixel_values": pixels[i:i + 1]},
                        copy.deepcopy(pols[i % len(pols)]),
                        SamplingParams(max_new_tokens=lengths[i], ignore_eos=i % 2 == 0))
                for i in range(9)]
    scheduler = engine.scheduler(max_batch=max_batch, prune_layer=K)
    handles = [scheduler.submit(r) for r in requests]
    seen_running = 0
    while scheduler.has_work:
        scheduler.step()
        seen_running = max(seen_running, scheduler.running)
        assert scheduler.running <= max_batch
    assert seen_running == max_batch and scheduler.running == 0
    for i, handle in enumerate(handles):
        want = alone(engine, ids[i], pixels[i], pols[i % len(pols)], requests[i].params)
        got = handle.result()
        assert handle.status == "finished"
        assert got.token_ids == want.token_ids, i
        assert got.finish_reason == want.finish_reason
        assert got.stats.kept_visual == want.stats.kept_visual, i
        assert got.stats.flops == want.stats.flops
    assert bool(scheduler.free_rows.all()) and int(scheduler.cache.lengths.abs().sum()) == 0


def test_several_images_per_request_beside_one_image_requests(engine):
    """Requests with several visual runs (the slot-table path of the ops) in one batch with
    requests of one run; each row keeps exactly what it keeps alone."""
    many_ids, many_pixels = multi_image_prompts([2, 3, 1], seed=15)
    ids, pixels = random_prompts(2, seed=16)
    images = [many_pixels[0:2], many_pixels[2:5], many_pixels[5:6], pixels[0:1], pixels[1:2]]
    prompts = list(many_ids) + list(ids)
    policy = Schedule([0.0, 0.3, 0.6], prune_layer=K)
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    scheduler = engine.scheduler(max_batch=3, prune_layer=K)
    handles = [scheduler.submit(Request(p, {"pixel_values": x}, copy.deepcopy(policy), params))
               for p, x in zip(prompts, images)]
    scheduler.run_until_idle()
    for p, x, handle in zip(prompts, images, handles):
        want, = engine.generate_ids([p], x, policy=copy.deepcopy(policy), sampling_params=params)
        assert handle.result().token_ids == want.token_ids
        assert handle.result().stats.kept_visual == want.stats.kept_visual


def test_sampled_requests_with_a_seed_equal_their_run_alone(engine):
    ids, pixels = random_prompts(4, seed=12)
    params = [SamplingParams(temperature=0.9, top_p=0.9, seed=s, max_new_tokens=7,
                             ignore_eos=True) for s in range(4)]
    scheduler = engine.scheduler(max_batch=2, prune_layer=K)
    handles = [scheduler.submit(Request(ids[i], {"pixel_values": pixels[i:i + 1]},
                                        Schedule([0.5], prune_layer=K), params[i]))
               for i in range(4)]
    scheduler.run_until_idle()
    for i, handle in enumerate(handles):
        want = alone(engine, ids[i], pixels[i], Schedule([0.5], prune_layer=K), params[i])
        assert handle.result().token_ids == want.token_ids


def test_cancel_frees_the_slot_at_the_next_step(engine):
    ids, pixels = random_prompts(3, seed=13)
    scheduler = engine.scheduler(max_batch=1, prune_layer=K)
    long_params = SamplingParams(max_new_tokens=50, ignore_eos=True)
    first, second, third = (scheduler.submit(Request(ids[i], {"pixel_values": pixels[i:i + 1]},
                                                     None, long_params)) for i in range(3))
    scheduler.step()
    assert first.status == "running" and second.status == "waiting"
    third.cancel()  # still waiting: it never runs
    first.cancel()
    scheduler.step()
    assert first.status == "cancelled" and third.status == "cancelled"
    assert second.status == "running" and scheduler.running == 1
    assert len(first.result().token_ids) == 2  # the prefill's token and one decode step
    second.cancel()
    scheduler.step()
    assert not scheduler.has_work and scheduler.running == 0


def test_after_a_failed_step_reset_frees_every_slot_and_the_next_requests_run(engine,
                                                                             monkeypatch):
    """What the server's loop does when a step raises: fail everything, reset, keep serving."""
    ids, pixels = random_prompts(3, seed=16)
    scheduler = engine.scheduler(max_batch=2, prune_layer=K)
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    submit = lambda i: scheduler.submit(Request(  # noqa: E731
        ids[i], {"pixel_values": pixels[i:i + 1]}, Schedule([0.5], prune_layer=K), params))
    handles = [submit(i) for i in range(3)]
    scheduler.step()
    with monkeypatch.context() as patch:
        patch.setattr(scheduler, "_decode", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            scheduler.step()
    scheduler.reset()
    assert [h.status for h in handles] == ["failed", "failed", "cancelled"]
    assert scheduler.running == 0 and not scheduler.has_work
    again = submit(0)
    scheduler.run_until_idle()
    expected = alone(engine, ids[0], pixels[0], Schedule([0.5], prune_layer=K), params)
    assert again.result().token_ids == expected.token_ids


def test_bad_requests_fail_before_any_work(engine):
    ids, pixels = random_prompts(1, seed=14)
    vision = {"pixel_values": pixels}
    scheduler = engine.scheduler(max_batch=1, prune_layer=K, max_queue=2, capacity=64)
    with pytest.raises(ValueError, match="exceed the scheduler's capacity 64"):
        scheduler.submit(Request(ids[0], vision, None, SamplingParams(max_new_tokens=60)))
    short = SamplingParams(max_new_tokens=4)
    with pytest.raises(ValueError, match="prunes from layer K = 2"):
        scheduler.submit(Request(ids[0], vision, Schedule([0.5], prune_layer=1), short))
    with pytest.raises(ValueError, match="image"):
        scheduler.submit(Request(ids[0][:5], vision, None, short))  # no image tokens
    scheduler.submit(Request(ids[0], vision, None, short))
    scheduler.submit(Request(ids[0], vision, None, short))
    with pytest.raises(QueueFull, match="maximum of 2"):
        scheduler.submit(Request(ids[0], vision, None, short))
    dense_only = engine.scheduler(max_batch=1)
    with pytest.raises(ValueError, match="does not prune"):
        dense_only.submit(Request(ids[0], vision, Schedule([0.5], prune_layer=K)))
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        engine.scheduler(max_batch=0)


def test_static_batching_admits_only_into_an_empty_batch(engine):
    ids, pixels = random_prompts(5, seed=17)
    scheduler = engine.scheduler(max_batch=2, prune_layer=K, batching="static")
    handles = [scheduler.submit(Request(ids[i], {"pixel_values": pixels[i:i + 1]}, None,
                                        SamplingParams(max_new_tokens=2 + 3 * i,
                                                       ignore_eos=True))) for i in range(5)]
    admitted_while_busy = False
    while scheduler.has_work:
        busy = scheduler.running > 0
        before = [h.status for h in handles]
        scheduler.step()
        joined = any(b == "waiting" and h.status != "waiting" for b, h in zip(before, handles))
        admitted_while_busy |= busy and joined
    assert not admitted_while_busy
    assert all(h.status == "finished" for h in handles)
    with pytest.raises(ValueError, match="batching must be"):
        engine.scheduler(batching="eager")


def test_continuous_batching_steps_rows_up_to_the_last_slot_in_use(engine, monkeypatch):
    """Rows past the last slot in use are not stepped; a gap below it is; answers stay those of
    the request alone. Static batching steps every row."""
    from dyrate_engine.engine import scheduler as scheduler_module

    stepped = []
    real = scheduler_module.decode_layers

    def counting(dec, cache, h, layers, rope=None):
        stepped.append(h.shape[0])
        return real(dec, cache, h, layers, rope)

    monkeypatch.setattr(scheduler_module, "decode_layers", counting)
    ids, pixels = random_prompts(3, seed=19)
    pols = policies(engine.decoder.n_heads)
    lengths = [9, 2, 4]  # slot 0: long; slot 1: ends at step 1; the third then takes slot 1
    for batching, rows in (("continuous", [2] * 4 + [1] * 4), ("static", [4] * 11)):
        stepped.clear()
        scheduler = engine.scheduler(max_batch=4, prune_layer=K, batching=batching)
        requests = [Request(ids[i], {"pixel_values": pixels[i:i + 1]}, copy.deepcopy(pols[3]),
                            SamplingParams(max_new_tokens=lengths[i], ignore_eos=True))
                    for i in range(3)]
        handles = [scheduler.submit(r) for r in requests[:2]]
        scheduler.step()
        handles.append(scheduler.submit(requests[2]))
        scheduler.run_until_idle()
        per_step = stepped[::2]  # two decode_layers calls per step (layers < K, then >= K)
        assert per_step == rows, batching
        for i, handle in enumerate(handles):
            want = alone(engine, ids[i], pixels[i], pols[3], requests[i].params)
            assert handle.result().token_ids == want.token_ids, (batching, i)
