"""scripts/pick_predictor.py: the demo build's choice of predictor, from validation results."""
import importlib.util
import json
from pathlib import Path

import pytest

from dyrate_engine.predictor import RatePredictor, save_predictor

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pick_predictor.py"
CONFIG = {"model_type": "llama", "num_attention_heads": 2, "num_hidden_layers": 3,
          "hidden_size": 16}


def _script():
    spec = importlib.util.spec_from_file_location("pick_predictor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _predictors(tmp_path, seeds):
    dirs = []
    for seed in seeds:
        training = {"lam": 1.0, "config": {"flops_budget": 0.7, "seed": seed}}
        dirs.append(str(save_predictor(tmp_path / f"p{seed}", RatePredictor(2), prune_layer=2,
                                       text_config=CONFIG, training=training)))
    return dirs


def _results(data, rows):
    """A results.json: dense at CIDEr 10, then (seed, cider, flops_reduction) rows."""
    policies = [{"label": "dense", "cider": 10.0, "flops_reduction": 0.0}]
    policies += [{"label": f"dyrate(K=2,lam=1,budget=0.7{f',seed={s}' if s else ''})",
                  "cider": c, "flops_reduction": f} for s, c, f in rows]
    return {"data": data, "policies": policies}


def test_picks_the_most_saving_of_those_that_hold_99_percent_everywhere(tmp_path):
    pick = _script().pick
    dirs = _predictors(tmp_path, (0, 1, 2))
    # seed 1 saves the most but drops below 99% on the second split; seed 2 holds on both.
    a = _results("val", [(0, 9.95, 0.20), (1, 9.99, 0.40), (2, 9.92, 0.30)])
    b = _results("detail-val", [(0, 9.99, 0.20), (1, 9.80, 0.40), (2, 9.91, 0.30)])
    assert pick([a, b], dirs) == dirs[2]
    # None holds: the most accurate on average.
    c = _results("val", [(0, 9.0, 0.2), (1, 9.5, 0.4), (2, 8.0, 0.3)])
    assert pick([c], dirs) == dirs[1]


def test_a_predictor_without_a_row_is_a_clear_error(tmp_path, capsys):
    script = _script()
    dirs = _predictors(tmp_path, (0, 1))
    results = tmp_path / "r.json"
    results.write_text(json.dumps(_results("val", [(0, 9.95, 0.2)])))
    with pytest.raises(SystemExit, match="no row 'dyrate.*seed=1"):
        script.main([str(results), "--", *dirs])
    with pytest.raises(SystemExit):  # no predictor given: the usage
        script.main([str(results)])
