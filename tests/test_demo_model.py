"""The bundled demo: the committed model and predictor load by name, caption the test
split mostly right, and `python -m dyrate_engine.demo` shows dense and DyRate side by side."""
import pytest

from dyrate_engine import DyRate, Engine
from dyrate_engine.bundled import DEMO_MODEL, DEMO_PREDICTOR
from dyrate_engine.data.scenes import make_scene

N = 24


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("demo")


@pytest.fixture(scope="module")
def scenes():
    return [make_scene("test", i) for i in range(N)]


def test_demo_files_are_small_and_safetensors_only():
    files = [p for p in DEMO_MODEL.iterdir()] + [p for p in DEMO_PREDICTOR.iterdir()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_dense_captions_are_mostly_right(engine, scenes):
    results = engine.generate([s.render() for s in scenes], [s.prompt for s in scenes],
                              max_new_tokens=48)
    exact = sum(r.text == s.caption() for r, s in zip(results, scenes)) / N
    assert exact >= 0.6, [(r.text, s.caption()) for r, s in zip(results, scenes)][:4]


def test_demo_predictor_prunes_and_keeps_the_answer_close(engine, scenes):
    policy = DyRate.from_pretrained("demo")
    assert policy.meta["n_layers"] == engine.decoder.n_layers
    results = engine.generate([s.render() for s in scenes], [s.prompt for s in scenes],
                              policy=policy, max_new_tokens=48)
    saved = sum(r.stats.flops_saved for r in results) / N
    assert saved > 0.1
    assert all(set(r.stats.rates) <= set(policy.predictor.rates) for r in results)
    assert all(r.stats.kept_visual[-1] < r.stats.n_visual for r in results)


def test_demo_main_prints_both_answers(capsys):
    from dyrate_engine.demo.__main__ import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "[dense]" in out and "[dyrate(K=" in out and "FLOPs saved" in out


def test_a_later_training_stage_starts_after_the_scenes_of_every_earlier_one(tmp_path):
    import json

    from dyrate_engine.demo.train_vlm import earlier_stages, scenes_seen
    assert scenes_seen(None) == 0 and scenes_seen(tmp_path) == 0
    (tmp_path / "training.json").write_text(json.dumps({"steps": 10, "train_scenes": 320}))
    assert scenes_seen(tmp_path) == 320 and len(earlier_stages(tmp_path)) == 1
    stages = [{"train_scenes": 320}, {"train_scenes": [320, 960]}]
    (tmp_path / "training.json").write_text(json.dumps({"stages": stages}))
    assert scenes_seen(tmp_path) == 960 and earlier_stages(tmp_path) == stages


def test_demo_config_default_width_is_the_bundled_models_and_other_widths_scale():
    import json

    from dyrate_engine.demo.train_vlm import demo_config
    bundled = json.loads((DEMO_MODEL / "config.json").read_text())["text_config"]
    text = demo_config(bundled["vocab_size"], 5).text_config
    fields = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
              "num_hidden_layers")
    assert {f: getattr(text, f) for f in fields} == {f: bundled[f] for f in fields}
    narrow = demo_config(41, 5, text_width=128).text_config
    assert (narrow.hidden_size, narrow.num_attention_heads, narrow.intermediate_size) == \
        (128, 4, 352)
    with pytest.raises(ValueError, match="multiple of 64"):
        demo_config(41, 5, text_width=100)
