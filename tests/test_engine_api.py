"""The engine's API around the loop: raw images and prompts, streaming, sampling, errors, FLOPs."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from dyrate_engine import Engine
from dyrate_engine.models import flops
from dyrate_engine.engine.runner import decode_layers
from tiny_models import (IMAGE_SIZE, IMAGE_TOKEN, TOKENS_PER_IMAGE, build_tiny_llava,
                         build_tiny_processor, random_prompts)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_llava(path, kind="llama")
    build_tiny_processor(path)
    return Engine.from_pretrained(path)


def test_images_as_pil_numpy_and_tensor_give_the_same_answer(engine):
    array = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pil = Image.fromarray(array)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    answers = engine.generate([pil, array, tensor], ["Describe the image."] * 3, max_new_tokens=6)
    assert answers[0].token_ids == answers[1].token_ids == answers[2].token_ids
    assert isinstance(answers[0].text, str) and len(answers[0].token_ids) > 0
    prompt_ids = engine.model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
        add_generation_prompt=True)
    assert "<image>" in prompt_ids and answers[0].stats.n_visual == TOKENS_PER_IMAGE


def test_stream_yields_the_same_tokens_and_text(engine):
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 90, dtype=np.uint8)
    result = engine.generate(image, "What is this?", max_new_tokens=8)[0]
    events = list(engine.stream(image, "What is this?", max_new_tokens=8))
    assert [e.token_id for e in events] == result.token_ids
    assert "".join(e.text for e in events) == result.text


def test_sampling_is_seeded_and_respects_top_k(engine):
    ids, pixels = random_prompts(2)
    a = engine.generate_ids(ids, pixels, max_new_tokens=8, temperature=1.5, seed=3)
    b = engine.generate_ids(ids, pixels, max_new_tokens=8, temperature=1.5, seed=3)
    c = engine.generate_ids(ids, pixels, max_new_tokens=8, temperature=1.5, seed=4)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]
    greedy = engine.generate_ids(ids, pixels, max_new_tokens=8)
    top1 = engine.generate_ids(ids, pixels, max_new_tokens=8, temperature=2.0, top_k=1, seed=0)
    tiny_p = engine.generate_ids(ids, pixels, max_new_tokens=8, temperature=2.0, top_p=1e-6, seed=0)
    assert [r.token_ids for r in top1] == [r.token_ids for r in greedy] == [r.token_ids for r in tiny_p]


def test_stop_tokens_end_each_sequence_on_its_own(engine):
    ids, pixels = random_prompts(3)
    full = engine.generate_ids(ids, pixels, max_new_tokens=10)
    stop = full[1].token_ids[3]
    stopped = engine.generate_ids(ids, pixels, max_new_tokens=10, stop_token_ids=[stop])
    for r_full, r_stop in zip(full, stopped):
        cut = r_full.token_ids.index(stop) + 1 if stop in r_full.token_ids else len(r_full.token_ids)
        assert r_stop.token_ids == r_full.token_ids[:cut]
        assert r_stop.finish_reason == ("stop" if stop in r_full.token_ids else "length")
    assert len(stopped[1].token_ids) <= 4
    assert len(stopped[1].stats.flops) == len(stopped[1].token_ids)


def _ids(n_image=TOKENS_PER_IMAGE, tail=3):
    return torch.cat([torch.tensor([1, 5]), torch.full((n_image,), IMAGE_TOKEN), torch.full((tail,), 9)])


@pytest.mark.parametrize("make, message", [
    (lambda: ([_ids()], torch.randn(1, 3, 20, 20), 4), "28x28 pixels"),
    (lambda: ([_ids()], torch.randn(1, 1, 28, 28), 4), "3 channels"),
    (lambda: ([_ids(n_image=0)], torch.randn(1, 3, 28, 28), 4), "has 0 image tokens"),
    (lambda: ([_ids(n_image=5)], torch.randn(1, 3, 28, 28), 4), "exactly 16"),
    (lambda: ([_ids(tail=300)], torch.randn(1, 3, 28, 28), 4), "exceeds the engine's capacity"),
    (lambda: ([_ids()], torch.randn(1, 3, 28, 28), 0), "max_new_tokens"),
    (lambda: ([_ids(), _ids()], torch.randn(1, 3, 28, 28), 4), "2 prompts but 1 images"),
])
def test_bad_input_is_a_clear_error_and_the_engine_stays_usable(engine, make, message):
    ids, pixels, n = make()
    with pytest.raises(ValueError, match=message):
        engine.generate_ids(ids, pixels, max_new_tokens=n)
    ok = engine.generate_ids([_ids()], torch.randn(1, 3, 28, 28), max_new_tokens=3)
    assert len(ok[0].token_ids) >= 1


def test_not_a_llava_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        Engine.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="supported: 'llava'"):
        Engine.from_pretrained(tmp_path)


def test_flops_match_torch_flop_counter(engine):
    """The analytical count equals what FlopCounterMode sees the engine execute."""
    dec = engine.decoder
    ids, pixels = random_prompts(1)
    engine.generate_ids(ids, pixels, max_new_tokens=1)  # warm
    from dyrate_engine.engine.cache import KVCache
    n = len(ids[0])
    cache = KVCache.allocate(dec.n_layers, 1, dec.n_kv_heads, n + 4, dec.head_dim,
                             dtype=dec.dtype, device=dec.device)
    cache.start(0, n)
    h = dec.embed_tokens[torch.tensor([7])][:, None]
    # torch counts SDPA on CUDA but has no formula for its CPU flash kernel: give it torch's own.
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v)}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        h, _ = decode_layers(dec, cache, h, range(dec.n_layers))
        dec.logits(h[:, 0])
    assert counter.get_total_flops() == flops.decode_flops(dec, [n + 1] * dec.n_layers)
    result = engine.generate_ids(ids, pixels, max_new_tokens=3)[0]
    assert result.stats.flops[1] == flops.decode_flops(dec, [n + 1] * dec.n_layers)
    assert result.stats.flops[0] == flops.prefill_flops(dec, [n] * dec.n_layers)


def test_cli_generate_prints_the_answer_and_a_summary(engine, tmp_path, capsys):
    from dyrate_engine.cli import main

    image = tmp_path / "img.png"
    Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(image)
    model_dir = engine.model.hf.name_or_path
    assert main(["generate", "--model", model_dir, "--image", str(image), "--prompt",
                 "Describe the image.", "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    expected = engine.generate(Image.open(image), "Describe the image.", max_new_tokens=5)[0]
    assert out.strip() == expected.text.strip()
    assert "tok/s" in err and "FLOPs" in err
    assert main(["generate", "--model", str(tmp_path), "--image", str(image), "--prompt", "x"]) == 2


def test_cli_policy_spellings():
    from dyrate_engine.policies import parse_policy

    assert parse_policy("dense").monitor_layer is None
    fastv = parse_policy("fastv:3:0.25")
    assert (fastv.monitor_layer, fastv.ratio) == (2, 0.25)
    assert parse_policy("fastv").monitor_layer == 1
    schedule = parse_policy("schedule:2:0,0.5,0.9")
    assert schedule.rate_list == [0.0, 0.5, 0.9] and schedule.monitor_layer == 1
    for bad in ("fastv:x", "schedule:2", "schedule:2:1.5", "magic"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_sampling_params_object_and_keyword_overrides_agree(engine):
    from dyrate_engine import SamplingParams

    ids, pixels = random_prompts(2)
    params = SamplingParams(max_new_tokens=6, temperature=1.3, seed=7)
    by_object = engine.generate_ids(ids, pixels, sampling_params=params)
    by_keywords = engine.generate_ids(ids, pixels, max_new_tokens=6, temperature=1.3, seed=7)
    overridden = engine.generate_ids(ids, pixels, sampling_params=params, max_new_tokens=3)
    assert [r.token_ids for r in by_object] == [r.token_ids for r in by_keywords]
    assert [r.token_ids for r in overridden] == [r.token_ids[:3] for r in by_object]
    with pytest.raises(TypeError, match="SamplingParams"):
        engine.generate_ids(ids, pixels, None, 8)


def test_ignore_eos_runs_past_eos_and_stop_tokens_still_stop(engine, monkeypatch):
    ids, pixels = random_prompts(1)
    [full] = engine.generate_ids(ids, pixels, max_new_tokens=10, ignore_eos=True)
    eos = full.token_ids[2]
    monkeypatch.setattr(engine.model, "eos_token_ids", [eos])
    cut = full.token_ids.index(eos) + 1
    [stopped] = engine.generate_ids(ids, pixels, max_new_tokens=10)
    assert stopped.token_ids == full.token_ids[:cut] and stopped.finish_reason == "stop"
    [ignored] = engine.generate_ids(ids, pixels, max_new_tokens=10, ignore_eos=True)
    assert ignored.token_ids == full.token_ids and ignored.finish_reason == "length"
    [by_stop] = engine.generate_ids(ids, pixels, max_new_tokens=10, ignore_eos=True,
                                    stop_token_ids=[eos])
    assert by_stop.token_ids == full.token_ids[:cut]


@pytest.mark.parametrize("fields, message", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(max_new_tokens=2.0), "max_new_tokens"), (dict(stop_token_ids=["x"]), "stop_token_ids"),
    (dict(temperature=-1), "temperature"), (dict(top_p=1.5), "top_p"), (dict(top_k=0), "top_k"),
])
def test_bad_sampling_params_are_clear_errors(fields, message):
    from dyrate_engine import SamplingParams

    with pytest.raises(ValueError, match=message):
        SamplingParams(**fields)


def test_check_policy_returns_k_and_refuses_what_cannot_run(engine):
    from dyrate_engine import Dense, FastV, Schedule

    n_layers = engine.decoder.n_layers
    assert engine.check_policy(Dense()) == n_layers
    assert engine.check_policy(FastV(prune_layer=1)) == 1
    assert engine.check_policy(Schedule([0.5], prune_layer=n_layers - 1)) == n_layers - 1
    with pytest.raises(ValueError, match="monitor layer K-1"):
        engine.check_policy(Schedule([0.5], prune_layer=n_layers))


def test_several_images_per_prompt_through_the_processor(engine):
    """A list of images per prompt: each shown before the text, in order, as generate_ids with
    the processor's ids and every image's pixels gives."""
    rng = np.random.default_rng(1)
    a, b, c = (Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)) for _ in range(3))
    prompts = ["Describe the image.", "What is this?"]
    results = engine.generate([[a, b], c], prompts, max_new_tokens=6)
    assert [r.stats.n_visual for r in results] == [2 * TOKENS_PER_IMAGE, TOKENS_PER_IMAGE]
    ids, vision = engine.model.encode([[a, b], [c]], prompts)
    pixels = vision["pixel_values"]
    assert pixels.shape[0] == 3 and (ids[0] == IMAGE_TOKEN).sum() == 2 * TOKENS_PER_IMAGE
    by_ids = engine.generate_ids(ids, pixels, max_new_tokens=6, output_logits=True)
    assert [r.token_ids for r in results] == [r.token_ids for r in by_ids]
    swapped = engine.generate_ids(ids, pixels[[1, 0, 2]], max_new_tokens=6, output_logits=True)
    assert not torch.equal(swapped[0].logits[0], by_ids[0].logits[0])  # order matters
    torch.testing.assert_close(swapped[1].logits, by_ids[1].logits)  # the other request does not
    with pytest.raises(ValueError, match="prompt 0 has no image"):
        engine.generate([[]], ["Describe the image."])
    with pytest.raises(ValueError, match="2 prompts but 5 images: their image tokens ask for 3"):
        engine.generate_ids(ids, torch.cat([pixels[:2], pixels]), max_new_tokens=2)


def test_cli_generate_takes_several_images(engine, tmp_path, capsys):
    from dyrate_engine.cli import main

    paths = []
    for i, colour in enumerate((30, 220)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((28, 28, 3), colour, dtype=np.uint8)).save(paths[-1])
    assert main(["generate", "--model", engine.model.hf.name_or_path, "--image", str(paths[0]),
                 "--image", str(paths[1]), "--prompt", "What is this?",
                 "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    images = [Image.open(p).convert("RGB") for p in paths]
    [expected] = engine.generate([images], ["What is this?"], max_new_tokens=5)
    assert out.strip() == expected.text.strip()
    assert f"kept visual tokens {2 * TOKENS_PER_IMAGE}/{2 * TOKENS_PER_IMAGE}" in err
