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


def _results(data, dirs, rows):
    """A results.json: dense at CIDEr 10, then (index into dirs, cider, flops, kv) rows, each
    labelled as eval labels it and loaded from its directory."""
    policies = [{"label": "dense", "family": "dense", "cider": 10.0, "flops_reduction": 0.0,
                 "kv_read_reduction": 0.0, "source": ""}]
    policies += [{"label": "dyrate(K=2,lam=1,budget=0.7)", "family": "dyrate", "cider": c,
                  "flops_reduction": f, "kv_read_reduction": kv, "source": dirs[i]}
                 for i, c, f, kv in rows]
    return {"data": data, "policies": policies}


def test_picks_the_most_saving_of_those_that_hold_99_percent_everywhere(tmp_path):
    pick = _script().pick
    dirs = _predictors(tmp_path, (0, 1, 2))
    # Rows share a label (as repeated configurations do): each is found by its directory.
    # 1 saves the most FLOPs but drops below 99% on the second split; 2 holds on both.
    a = _results("val", dirs, [(0, 9.95, 0.20, 0.5), (1, 9.99, 0.40, 0.1), (2, 9.92, 0.30, 0.2)])
    b = _results("detail-val", dirs, [(0, 9.99, 0.20, 0.5), (1, 9.80, 0.40, 0.1),
                                      (2, 9.91, 0.30, 0.2)])
    assert pick([a, b], dirs) == dirs[2]
    assert pick([a, b], dirs, "kv_read_reduction") == dirs[0]
    # None holds: the most accurate on average.
    c = _results("val", dirs, [(0, 9.0, 0.2, 0), (1, 9.5, 0.4, 0), (2, 8.0, 0.3, 0)])
    assert pick([c], dirs) == dirs[1]
    with pytest.raises(ValueError, match="saving must be one of"):
        pick([c], dirs, "tokens")


def test_a_predictor_without_exactly_one_row_is_a_clear_error(tmp_path):
    script = _script()
    dirs = _predictors(tmp_path, (0, 1))
    results = tmp_path / "r.json"
    results.write_text(json.dumps(_results("val", dirs, [(0, 9.95, 0.2, 0.1)])))
    with pytest.raises(SystemExit, match="p1: 0 rows loaded from it"):
        script.main([str(results), "--", *dirs])
    results.write_text(json.dumps(_results("val", dirs, [(0, 9.9, 0.2, 0.1), (0, 9.9, 0.2, 0.1),
                                                         (1, 9.9, 0.2, 0.1)])))
    with pytest.raises(SystemExit, match="p0: 2 rows"):
        script.main(["--saving", "kv_read_reduction", str(results), *dirs])
    with pytest.raises(SystemExit):  # no predictor given: the usage
        script.main([str(results)])


def test_eval_rows_name_the_directory_a_predictor_was_loaded_from(tmp_path):
    from dyrate_engine.eval import eval_policy
    from dyrate_engine.policies import DyRate

    [directory] = _predictors(tmp_path, (0,))
    entry = eval_policy(DyRate.from_pretrained(directory))
    assert Path(entry.source).resolve() == Path(directory).resolve()
    assert eval_policy(DyRate(RatePredictor(2), 2)).source == ""
