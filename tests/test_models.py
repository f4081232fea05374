"""The model adapter: the family comes from config.json, clear errors for what is not supported,
and the shared parts (span search, embedding splice) do what the engine relies on."""
import json

import pytest
import torch

from dyrate_engine import Engine
from dyrate_engine.models import FAMILIES, LlavaModel, VisualSpan, load_model
from dyrate_engine.models.base import find_visual_span, visual_slots
from tiny_models import IMAGE_TOKEN, TOKENS_PER_IMAGE, build_tiny_llava, random_prompts


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(build_tiny_llava(tmp_path_factory.mktemp("tiny")))


def test_the_family_comes_from_config_json(model):
    assert type(model) is LlavaModel and FAMILIES["llava"] is LlavaModel
    assert model.tokens_per_image == TOKENS_PER_IMAGE and model.image_token_id == IMAGE_TOKEN
    assert model.processor is None and model.eos_token_ids == [2]


def _config(directory, text):
    directory.mkdir()
    (directory / "config.json").write_text(text)
    return directory


def test_unsupported_families_and_text_models_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'qwen2_vl' model; supported: 'llava'"):
        load_model(_config(tmp_path / "a", json.dumps({"model_type": "qwen2_vl"})))
    gemma = {"model_type": "llava", "text_config": {"model_type": "gemma"}}
    with pytest.raises(ValueError, match="'gemma' text model; supported text models: llama"):
        load_model(_config(tmp_path / "b", json.dumps(gemma)))
    _config(tmp_path / "c", "{not json")
    with pytest.raises(ValueError, match="config.json: not a model config"):
        load_model(tmp_path / "c")


def test_a_url_is_never_fetched():
    with pytest.raises(ValueError, match="looks like a URL"):
        load_model("https://example.com/llava-1.5-7b-hf")


def test_engine_takes_an_adapter_not_a_transformers_module(model):
    with pytest.raises(TypeError, match="LlavaModel"):
        Engine(model.hf)
    assert Engine(model).decoder is model.decoder


def test_visual_span_search():
    ids = torch.tensor([1, 5, IMAGE_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN, 7])
    assert find_visual_span(ids, IMAGE_TOKEN) == VisualSpan(2, 3)
    assert find_visual_span(torch.tensor([1, 5]), IMAGE_TOKEN) == VisualSpan(0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        find_visual_span(torch.tensor([IMAGE_TOKEN, 4, IMAGE_TOKEN]), IMAGE_TOKEN)


def test_the_model_checks_each_prompts_image_tokens(model):
    ids, _ = random_prompts(1)
    assert model.visual_span(ids[0]) == VisualSpan(int((ids[0] == IMAGE_TOKEN).nonzero()[0]),
                                                   TOKENS_PER_IMAGE)
    short = torch.cat([torch.tensor([1, 5]), torch.full((15,), IMAGE_TOKEN), torch.tensor([9])])
    with pytest.raises(ValueError, match="prompt 3 has 15 image tokens .* exactly 16"):
        model.visual_span(short, 3)


def test_embed_splices_the_features_at_each_span(model):
    ids, _ = random_prompts(2)
    width = max(len(x) for x in ids)
    input_ids = torch.zeros(2, width, dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, :len(x)] = x
    spans = [model.visual_span(x, b) for b, x in enumerate(ids)]
    features = torch.randn(2, TOKENS_PER_IMAGE, model.decoder.embed_tokens.shape[1])
    h = model.embed(input_ids, features, spans)
    table = model.decoder.embed_tokens
    for b, span in enumerate(spans):
        visual = torch.zeros(width, dtype=torch.bool)
        visual[span.start:span.start + span.length] = True
        torch.testing.assert_close(h[b, visual], features[b])
        torch.testing.assert_close(h[b, ~visual], table[input_ids[b, ~visual]])


def test_visual_slots_of_ragged_rows():
    slots, real = visual_slots(torch.tensor([2, 5]), torch.tensor([3, 1]), length=7)
    assert slots.tolist() == [[2, 3, 4], [5, 6, 6]]
    assert real.tolist() == [[True, True, True], [True, False, False]]
