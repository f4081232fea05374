"""Renamed public keywords keep working for one release, with a DeprecationWarning that names the
new one, and mean exactly what the new keyword means."""
import pytest
import torch

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


def test_train_config_layer_keyword_and_attribute():
    with pytest.warns(DeprecationWarning, match="TrainConfig\\(layer=...\\)"):
        cfg = TrainConfig(layer=2)
    assert cfg.prune_layer == 2 and TrainConfig().prune_layer == 3
    with pytest.warns(DeprecationWarning, match="read prune_layer"):
        assert cfg.layer == 2
    cfg.prune_layer = 4
    with pytest.warns(DeprecationWarning):
        assert cfg.layer == 4
    with pytest.raises(TypeError, match="both layer="):
        TrainConfig(layer=2, prune_layer=3)


def test_train_config_copies_with_dataclasses_replace(recwarn):
    import dataclasses

    cfg = TrainConfig(prune_layer=2, lam=0.5)
    assert dataclasses.replace(cfg, steps=5).prune_layer == 2
    assert dataclasses.replace(cfg, prune_layer=4).prune_layer == 4
    assert "layer" not in dataclasses.asdict(cfg)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("make", [lambda: FastV(prune_layer=3, layer=2),
                                  lambda: Schedule([0.5], 3, layer=2),
                                  lambda: Dense(prune_layer=3, monitor_layer=1)])
def test_old_and_new_keyword_together_is_an_error(make):
    with pytest.raises(TypeError, match="pass prune_layer= only"):
        make()


def test_dense_takes_keywords_only_and_says_how_the_old_value_translates():
    with pytest.raises(TypeError):
        Dense(2)  # the old positional argument was the monitor layer: never reinterpret it
    with pytest.warns(DeprecationWarning, match="use prune_layer=3 \\(the monitor layer \\+ 1\\)"):
        Dense(monitor_layer=2)
    with pytest.raises(ValueError, match="monitor_layer must be >= 0, got -1"):
        Dense(monitor_layer=-1)


def test_a_subclass_naming_the_monitor_layer_keeps_pruning():
    from dyrate_engine import Policy

    with pytest.warns(DeprecationWarning, match="set prune_layer = 3"):
        class OldStyle(Policy):
            monitor_layer = 2

            def rates(self, stats):
                return torch.full(stats.n_visual.shape, 0.5)

    policy = OldStyle()
    assert policy.prune_layer == 3 and policy.monitor_layer == 2


def test_training_functions_still_take_an_engine(tmp_path):
    from dyrate_engine import Engine
    from dyrate_engine.train import Example, collate, teacher_forced_rates
    from tiny_models import build_tiny_llava, random_prompts

    engine = Engine.from_pretrained(build_tiny_llava(tmp_path, layers=3))
    ids, pixels = random_prompts(2)
    examples = [Example(i, torch.tensor([5, 6, 2]), p) for i, p in zip(ids, pixels)]
    with pytest.warns(DeprecationWarning, match="pass engine.model"):
        batch = collate(examples, engine)
    with pytest.raises(TypeError, match="collate\\(examples, engine.model\\)"):
        collate(examples, 127)
    predictor = RatePredictor(engine.decoder.n_heads)
    with pytest.warns(DeprecationWarning, match="teacher_forced_rates"):
        old = teacher_forced_rates(engine.model, predictor, batch, layer=2)
    assert old == teacher_forced_rates(engine.model, predictor, batch, 2)


def test_sampling_params_keep_their_positional_order():
    from dyrate_engine import SamplingParams

    params = SamplingParams(2.0, 5, 0.9, 1)
    assert (params.temperature, params.top_k, params.top_p, params.seed) == (2.0, 5, 0.9, 1)
    assert params.max_new_tokens == 64


def test_save_predictor_layer_keyword(tmp_path):
    config = {"num_attention_heads": 4, "num_hidden_layers": 5}
    with pytest.warns(DeprecationWarning, match="save_predictor"):
        save_predictor(tmp_path, RatePredictor(4), layer=2, text_config=config)
    _, meta = load_predictor(tmp_path)
    assert meta["prune_layer"] == 2 and meta["monitor_layer"] == 1
    with pytest.raises(TypeError, match="prune_layer"):
        save_predictor(tmp_path, RatePredictor(4), text_config=config)


def test_fastv_flops_layer_flag(capsys):
    from dyrate_engine.bench import fastv_flops

    assert fastv_flops.main(["--layer", "3"]) == fastv_flops.main(["--prune-layer", "3"])
    assert "--layer is deprecated; use --prune-layer" in capsys.readouterr().err


def test_cli_layer_flag_is_an_alias_of_prune_layer(capsys):
    args = build_parser().parse_args(["train-predictor", "--model", "m", "--data", "d", "--out",
                                      "o", "--layer", "4"])
    assert args.prune_layer == 4
    assert "--layer is deprecated; use --prune-layer" in capsys.readouterr().err
    args = build_parser().parse_args(["train-predictor", "--model", "m", "--data", "d", "--out",
                                      "o"])
    assert args.prune_layer == 3



def test_train_config_flops_budget_is_the_budget(capsys, recwarn):
    import dataclasses

    with pytest.warns(DeprecationWarning, match="TrainConfig\\(flops_budget=...\\)"):
        cfg = TrainConfig(flops_budget=0.7)
    assert cfg.budget == 0.7 and TrainConfig().budget is None
    with pytest.warns(DeprecationWarning, match="read budget"):
        assert cfg.flops_budget == 0.7
    assert "flops_budget" not in dataclasses.asdict(cfg)
    with pytest.raises(TypeError, match="both flops_budget="):
        TrainConfig(flops_budget=0.7, budget=0.6)
    args = build_parser().parse_args(["train-predictor", "--model", "m", "--data", "d", "--out",
                                      "o", "--flops-budget", "0.6"])
    assert args.budget == 0.6
    assert "--flops-budget is deprecated; use --budget" in capsys.readouterr().err
