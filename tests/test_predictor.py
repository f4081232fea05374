"""The rate predictor: features, the classifier, the exported artifact and DyRate's loading."""
import json

import pytest
import torch

from dyrate_engine import DyRate, Engine
from dyrate_engine.predictor import (FeatureSpec, RatePredictor, load_predictor, model_fingerprint,
                                     rate_features, save_predictor)
from tiny_models import build_tiny_llava, random_prompts



def test_features_layout_and_step_cap():
    spec = FeatureSpec(n_heads=3, step_scale=8)
    mass = torch.rand(2, 3, 4)
    f = rate_features(spec, mass, 4)
    assert f.shape == (2, 13) and f.dtype == torch.float32
    torch.testing.assert_close(f[:, :12], mass.reshape(2, 12))
    assert f[:, 12].tolist() == [0.5, 0.5]
    assert rate_features(spec, mass, 100)[:, 12].tolist() == [1.0, 1.0]
    per_row = rate_features(spec, torch.rand(2, 5, 3, 4), torch.arange(5)[None].expand(2, 5))
    assert per_row.shape == (2, 5, 13) and per_row[1, :, 12].tolist() == [0, .125, .25, .375, .5]


def test_features_reject_other_head_count():
    with pytest.raises(ValueError, match="trained on a model with 3 attention heads"):
        rate_features(FeatureSpec(3), torch.rand(2, 4, 4), 0)


@pytest.mark.parametrize("rates", [(), (0.5, 0.25), (0.0, 1.5), (0.2, 0.2)])
def test_bad_rates_are_rejected(rates):
    with pytest.raises(ValueError, match="rates"):
        RatePredictor(4, rates)


def test_predict_is_argmax_with_ties_to_lower_rate():
    p = RatePredictor(2, rates=(0.0, 0.5, 0.9))
    torch.nn.init.zeros_(p.linear.weight)
    with torch.no_grad():
        p.linear.bias.copy_(torch.tensor([0.0, 1.0, 1.0]))
    assert p.predict(torch.rand(3, 2, 4), 0).tolist() == [0.5] * 3
    with torch.no_grad():  # the image share decides: a head-0 image weight toward 0.9
        p.linear.weight[2, 1] = 5.0
    mass = torch.zeros(2, 2, 4)
    mass[0, 0, 1] = 1.0
    assert p.predict(mass, 3).tolist() == pytest.approx([0.9, 0.5])


def test_predicted_rates_are_the_candidates_exactly():
    """0.65 in float32 is 0.6499999762: ceil((1 - r) * 20) then keeps 8 tokens instead of 7."""
    from dyrate_engine.policies import n_keep_for
    p = RatePredictor(2, rates=(0.0, 0.65))
    torch.nn.init.zeros_(p.linear.weight)
    with torch.no_grad():
        p.linear.bias.copy_(torch.tensor([0.0, 1.0]))
    rates = p.predict(torch.rand(2, 2, 4), 0)
    assert rates.tolist() == [0.65, 0.65]
    assert n_keep_for(rates, torch.tensor([20, 144])).tolist() == [7, 51]


def test_artifact_round_trip(tmp_path):
    p = RatePredictor(4, rates=(0.0, 0.3, 0.6), step_scale=16)
    config = {"model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 3,
              "hidden_size": 64}
    save_predictor(tmp_path, p, prune_layer=2, text_config=config, training={"lam": 0.5})
    loaded, meta = load_predictor(tmp_path)
    assert meta["rates"] == [0.0, 0.3, 0.6] and meta["prune_layer"] == 2
    assert meta["monitor_layer"] == 1 and meta["training"] == {"lam": 0.5}
    assert meta["model_fingerprint"] == model_fingerprint(config)
    assert loaded.spec == p.spec
    for k, v in p.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    mass = torch.rand(5, 4, 4)
    assert loaded.predict(mass, 2).tolist() == p.predict(mass, 2).tolist()


def test_artifact_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictor.safetensors is missing"):
        load_predictor(tmp_path)
    p = RatePredictor(4)
    save_predictor(tmp_path, p, prune_layer=2, text_config={"num_attention_heads": 4,
                                                      "num_hidden_layers": 3})
    meta = json.loads((tmp_path / "predictor.json").read_text())
    meta["rates"] = [0.0, 0.5]  # weights hold 5 rates
    (tmp_path / "predictor.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("heads,layers,kv", [(8, 3, 2), (4, 5, 2)])
def test_incompatible_model_is_a_clear_error(tmp_path, heads, layers, kv):
    trained_for = build_tiny_llava(tmp_path / "a", layers=3, heads=4)
    other = build_tiny_llava(tmp_path / "b", layers=layers, heads=heads, kv_heads=kv)
    save_predictor(tmp_path / "p", RatePredictor(4), prune_layer=2,
                   text_config=Engine.from_pretrained(trained_for).decoder.config)
    policy = DyRate.from_pretrained(tmp_path / "p")
    ids, pixels = random_prompts(1)
    with pytest.raises(ValueError, match=f"trained for a model with 3 layers and 4 attention heads"
                                         f"; this model has {layers} layers and {heads} heads"):
        Engine.from_pretrained(other).generate_ids(ids, pixels, policy=policy, max_new_tokens=2)


def test_cli_train_predictor_exports_an_artifact_the_engine_runs(tmp_path, capsys):
    """JSONL and COCO-style data, a few steps: the artifact loads and drives generate."""
    import numpy as np
    from PIL import Image

    from dyrate_engine.cli import main
    from dyrate_engine.policies import parse_policy
    from tiny_models import build_tiny_processor

    model = build_tiny_processor(build_tiny_llava(tmp_path / "model", layers=4))
    rng = np.random.default_rng(0)
    lines, images, annotations = [], [], []
    for i in range(6):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp_path / name)
        lines.append(json.dumps({"image": name, "prompt": "Describe the image.",
                                 "answer": f"w{i} w{i + 3} the"}))
        images.append({"id": i, "file_name": name})
        annotations.append({"image_id": i, "caption": f"w{i + 1} image."})
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    (tmp_path / "coco.json").write_text(json.dumps({"images": images,
                                                    "annotations": annotations}))
    common = ["--model", str(model), "--steps", "3", "--batch-size", "2", "--prune-layer", "2",
              "--rates", "0,0.5"]
    assert main(["train-predictor", "--data", str(tmp_path / "data.jsonl"),
                 "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["train-predictor", "--coco", str(tmp_path / "coco.json"), "--images",
                 str(tmp_path), "--out", str(tmp_path / "b"), "--step-scale", "128",
                 "--cost", "kv", "--budget", "0.9",
                 *common]) == 0
    out = capsys.readouterr().out
    assert '"held_out"' in out
    for artifact in ("a", "b"):
        meta = json.loads((tmp_path / artifact / "predictor.json").read_text())
        assert meta["rates"] == [0.0, 0.5] and meta["prune_layer"] == 2
        assert meta["features"]["step_scale"] == {"a": 32.0, "b": 128.0}[artifact]
        config = meta["training"]["config"]
        assert (config["cost"], config["budget"]) == {"a": ("flops", None),
                                                            "b": ("kv", 0.9)}[artifact]
        assert meta["training"]["examples"] == 5 and meta["training"]["held_out"] == 1
        policy = parse_policy(f"dyrate:{tmp_path / artifact}")
        [result] = Engine.from_pretrained(model).generate(
            Image.open(tmp_path / "img0.png"), "Describe the image.", policy=policy,
            max_new_tokens=3)
        assert set(result.stats.rates) <= {0.0, 0.5}
    assert main(["train-predictor", "--coco", str(tmp_path / "coco.json"), "--out", "x",
                 *common]) == 2  # --coco without --images
    assert main(["train-predictor", "--data", str(tmp_path / "data.jsonl"), "--out", "x",
                 "--step-scale", "0", *common]) == 2


def test_dyrate_policy_rates_are_the_predictors_on_the_monitor_stats():
    from dyrate_engine.policies.base import MonitorStats

    torch.manual_seed(0)
    predictor = RatePredictor(2, rates=(0.0, 0.5, 0.9))
    with torch.no_grad():
        predictor.linear.weight.mul_(50.0)
    mass = torch.rand(6, 2, 4)
    stats = MonitorStats(4, torch.zeros(6, 8), mass, torch.full((6,), 8), torch.full((6,), 8))
    rates = DyRate(predictor, 2).rates(stats)
    assert rates.tolist() == predictor.predict(mass, 4).tolist()
    assert len(set(rates.tolist())) > 1  # the rows really differ: the check could fail
