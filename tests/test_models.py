"""The model adapter: the family comes from config.json, clear errors for what is not supported,
and the shared parts (span search, embedding splice) do what the engine relies on."""
import json

import pytest
import torch

from dyrate_engine import Engine
from dyrate_engine.models import FAMILIES, LlavaModel, VisualLayout, VisualSpan, load_model
from dyrate_engine.models.layout import find_visual_spans, slot_table
from dyrate_engine.models.vision import VisionInputs
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
    with pytest.raises(ValueError, match="'internvl' model; supported: 'llava', 'llava_next', "
                                         "'llava_onevision', 'qwen2_vl', 'qwen2_5_vl'"):
        load_model(_config(tmp_path / "a", json.dumps({"model_type": "internvl"})))
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
    ids = torch.tensor([1, 5, IMAGE_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN, 7, IMAGE_TOKEN, IMAGE_TOKEN])
    assert find_visual_spans(ids, IMAGE_TOKEN) == (VisualSpan(2, 3), VisualSpan(6, 2))
    assert find_visual_spans(torch.tensor([1, 5]), IMAGE_TOKEN) == ()
    layout = VisualLayout(find_visual_spans(ids, IMAGE_TOKEN), 1)
    assert (layout.n_visual, layout.vis_start, layout.slots()) == (5, 2, [2, 3, 4, 6, 7])


def _layouts(model, *prompts, images=None):
    n = images if images is not None else sum(int((p == IMAGE_TOKEN).sum()) // TOKENS_PER_IMAGE
                                              for p in prompts)
    vision = VisionInputs({"pixel_values": torch.zeros(n, 3, 28, 28)})
    return model.visual_layouts(list(prompts), vision)


def test_the_model_checks_each_prompts_image_tokens(model):
    ids, _ = random_prompts(1)
    start = int((ids[0] == IMAGE_TOKEN).nonzero()[0])
    assert _layouts(model, ids[0]) == [VisualLayout((VisualSpan(start, TOKENS_PER_IMAGE),), 1)]
    image = torch.full((TOKENS_PER_IMAGE,), IMAGE_TOKEN)
    two = torch.cat([torch.tensor([1]), image, torch.tensor([4, 4]), image, torch.tensor([9])])
    assert _layouts(model, two) == [VisualLayout(
        (VisualSpan(1, TOKENS_PER_IMAGE), VisualSpan(3 + TOKENS_PER_IMAGE, TOKENS_PER_IMAGE)), 2)]
    adjacent = torch.cat([torch.tensor([1]), image, image])
    assert [lay.n_images for lay in _layouts(model, adjacent, ids[0])] == [2, 1]
    short = torch.cat([torch.tensor([1, 5]), torch.full((15,), IMAGE_TOKEN), torch.tensor([9])])
    with pytest.raises(ValueError, match="prompt 1 has 15 image tokens .* exactly 16"):
        _layouts(model, ids[0], short, images=2)
    with pytest.raises(ValueError, match="prompt 0 has 0 image tokens"):
        _layouts(model, torch.tensor([1, 5, 9]), images=0)
    with pytest.raises(ValueError, match="2 prompts but 3 images: their image tokens ask for 2"):
        _layouts(model, ids[0], ids[0], images=3)
    with pytest.raises(ValueError, match="2 prompts but 1 images: prompt 1"):
        _layouts(model, ids[0], ids[0], images=1)


def test_embed_splices_the_features_at_each_span(model):
    ids, _ = random_prompts(2)
    image = torch.full((TOKENS_PER_IMAGE,), IMAGE_TOKEN)
    ids.append(torch.cat([torch.tensor([1, 6]), image, torch.tensor([4, 4, 4]), image]))
    width = max(len(x) for x in ids)
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, :len(x)] = x
    layouts = _layouts(model, *ids)
    d = model.decoder.embed_tokens.shape[1]
    features = [torch.randn(layout.n_visual, d) for layout in layouts]
    h = model.embed(input_ids, features, layouts)
    table = model.decoder.embed_tokens
    for b, layout in enumerate(layouts):
        visual = torch.zeros(width, dtype=torch.bool)
        visual[layout.slots()] = True
        torch.testing.assert_close(h[b, layout.slots()], features[b])
        torch.testing.assert_close(h[b, ~visual], table[input_ids[b, ~visual]])


def test_slot_table_of_ragged_rows():
    layouts = [VisualLayout((VisualSpan(2, 3),), 1),
               VisualLayout((VisualSpan(5, 1), VisualSpan(8, 1)), 2)]
    slots, real = slot_table(layouts)
    assert slots.tolist() == [[2, 3, 4], [5, 8, 0]]
    assert real.tolist() == [[True, True, True], [True, True, False]]
