"""Renamed public keywords keep working for one release, with a DeprecationWarning that names the
new one, and mean exactly what the new keyword means."""
import pytest

from dyrate_engine import Dense, DyRate, FastV, Schedule
from dyrate_engine.cli import build_parser
from dyrate_engine.predictor import RatePredictor, load_predictor, save_predictor
from dyrate_engine.train import TrainConfig


@pytest.mark.parametrize("old, new", [
    (lambda: FastV(layer=3, ratio=0.25), lambda: FastV(prune_layer=3, ratio=0.25)),
    (lambda: Schedule([0.5, 0.7], layer=4), lambda: Schedule([0.5, 0.7], prune_layer=4)),
    (lambda: DyRate(lambda s: None, layer=2), lambda: DyRate(lambda s: None, prune_layer=2)),
    (lambda: Dense(monitor_layer=1), lambda: Dense(prune_layer=2)),
])
def test_old_policy_keywords_warn_and_mean_the_same(old, new):
    with pytest.warns(DeprecationWarning, match="use prune_layer="):
        policy = old()
    expected = new()
    assert (policy.prune_layer, policy.monitor_layer, policy.name) == \
        (expected.prune_layer, expected.monitor_layer, expected.name)


def test_new_keywords_do_not_warn(recwarn):
    FastV(prune_layer=2)
    Schedule([0.5], 3)
    Dense(prune_layer=2)
    TrainConfig(prune_layer=2)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_setting_monitor_layer_warns_and_sets_prune_layer():
    policy = Dense()
    with pytest.warns(DeprecationWarning, match="prune_layer"):
        policy.monitor_layer = 4
    assert policy.prune_layer == 5 and policy.monitor_layer == 4


def test_train_config_layer_keyword():
    with pytest.warns(DeprecationWarning, match="TrainConfig\\(layer=...\\)"):
        cfg = TrainConfig(layer=2)
    assert cfg.prune_layer == 2 and cfg.layer is None


def test_save_predictor_layer_keyword(tmp_path):
    config = {"num_attention_heads": 4, "num_hidden_layers": 5}
    with pytest.warns(DeprecationWarning, match="save_predictor"):
        save_predictor(tmp_path, RatePredictor(4), layer=2, text_config=config)
    _, meta = load_predictor(tmp_path)
    assert meta["prune_layer"] == 2 and meta["monitor_layer"] == 1
    with pytest.raises(TypeError, match="prune_layer"):
        save_predictor(tmp_path, RatePredictor(4), text_config=config)


def test_cli_layer_flag_is_an_alias_of_prune_layer(capsys):
    args = build_parser().parse_args(["train-predictor", "--model", "m", "--data", "d", "--out",
                                      "o", "--layer", "4"])
    assert args.prune_layer == 4
    assert "--layer is deprecated; use --prune-layer" in capsys.readouterr().err
    args = build_parser().parse_args(["train-predictor", "--model", "m", "--data", "d", "--out",
                                      "o"])
    assert args.prune_layer == 3

