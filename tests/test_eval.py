"""The quality harness (``dyrate eval``): metric wrappers against pycocoevalcap, the eval-set
loaders, the harness and plots on a tiny random model, and the CLI end to end."""
import json

import pytest
from PIL import Image

from dyrate_engine import Engine
from dyrate_engine.cli import main
from dyrate_engine.policies import parse_policy
from dyrate_engine.data.scenes import make_scene
from dyrate_engine.eval import caption_scores, eval_policy, load_eval_set, run_policy, tokenize
from dyrate_engine.eval.harness import attention_shares, generate_all, kv_reads_of, mean_by_step
from dyrate_engine.eval.plots import attention_plot, kept_plot, pareto_plot

from tiny_models import IMAGE_SIZE, build_tiny_llava, build_tiny_processor

pytest.importorskip("pycocoevalcap")

REFS = {"a": ["a red circle at the top left", "a small red circle in the corner"],
        "b": ["two blue squares in the center"],
        "c": ["a large green triangle at the bottom", "one green triangle"]}


def test_identical_captions_score_as_pycocoevalcap_and_match_exactly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hyps = {k: refs[0] for k, refs in REFS.items()}
    scores = caption_scores(hyps, REFS)
    gts = dict(enumerate(REFS.values()))  # already lowercase words: tokenising changes nothing
    res = {i: [hyps[k]] for i, k in enumerate(REFS)}
    assert scores["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert scores["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert scores["exact_match"] == 1.0
    wrong = caption_scores({**hyps, "b": "a yellow circle at the top"}, REFS)
    assert wrong["cider"] < scores["cider"] and wrong["bleu4"] < scores["bleu4"]
    assert wrong["exact_match"] == pytest.approx(2 / 3)
    assert wrong["per_item"]["b"]["cider"] < scores["per_item"]["b"]["cider"]


def test_tokenize_separates_and_drops_punctuation_and_case():
    assert tokenize("A Dog, sitting (outside).") == ["a", "dog", "sitting", "outside"]
    assert tokenize("one shape .", keep_punctuation=True) == ["one", "shape", "."]
    # Case and spacing of punctuation do not matter for exact match.
    assert caption_scores({"x": "There is one shape."}, {"x": ["there is one shape ."]}
                          )["exact_match"] == 1.0


def test_synthetic_split_loader():
    items = load_eval_set("demo-test:5")
    assert len(items) == 5
    for i, item in enumerate(items):
        scene = make_scene("test", i)
        assert item.references == [scene.caption()] and item.prompt == scene.prompt
        assert item.load_image().size == scene.render().size
    assert len(load_eval_set("demo-val:7", limit=3)) == 3
    detail = load_eval_set("demo-detail-val:3")
    for i, item in enumerate(detail):
        scene = make_scene("val", i, "detail")
        assert item.references == [scene.detail()] and item.prompt == scene.prompt
        assert item.key == f"detail-val/{i}" and len(item.references[0].split()) >= 100


@pytest.mark.parametrize("spec", ["demo-nosuch", "demo-test:0", "demo-test:x", "missing.jsonl",
                                  "demo-poem-test", "demo-detail-dev:3"])
def test_bad_data_is_a_clear_error(spec):
    with pytest.raises((ValueError, FileNotFoundError), match="bad data"):
        load_eval_set(spec)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-layer tiny model with its processor, and a JSONL of three images (one captioned twice)."""
    root = tmp_path_factory.mktemp("eval")
    build_tiny_llava(root / "model", layers=4)
    build_tiny_processor(root / "model")
    records = []
    for i, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colour).save(root / f"{i}.png")
        records.append({"image": f"{i}.png", "prompt": "Describe the image.",
                        "answer": f"a {colour} square"})
    records.append({"image": "0.png", "prompt": "Describe the image.", "answer": "all red"})
    (root / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_jsonl_and_coco_records_are_grouped_by_image(tiny, tmp_path):
    items = load_eval_set(str(tiny / "set.jsonl"))
    assert [len(it.references) for it in items] == [2, 1, 1]
    coco = {"images": [{"id": 7, "file_name": "0.png"}, {"id": 8, "file_name": "1.png"}],
            "annotations": [{"image_id": 7, "caption": "x y"}, {"image_id": 8, "caption": "z"},
                            {"image_id": 7, "caption": "x z "}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    items = load_eval_set(coco=str(tmp_path / "captions.json"), images=str(tiny))
    assert [(it.key, it.references) for it in items] == [("7", ["x y", "x z"]), ("8", ["z"])]
    with pytest.raises(FileNotFoundError, match="missing"):
        load_eval_set(coco=str(tmp_path / "captions.json"), images=str(tmp_path))


def test_harness_measures_pruning_and_writes_plots(tiny, tmp_path):
    engine = Engine.from_pretrained(tiny / "model")
    items = load_eval_set(str(tiny / "set.jsonl"))
    kw = dict(max_new_tokens=4, batch_size=2, progress=False)
    rows = [run_policy(engine, items, eval_policy(parse_policy(spec)), **kw)
            for spec in ("dense", "schedule:3:0.5", "fastv:2:0.75")]
    dense, schedule, fastv = rows
    assert dense.flops_reduction == 0 and dense.mean_kept_visual == dense.mean_visual == 16
    for pruned in (schedule, fastv):
        assert pruned.flops_reduction > 0 and pruned.mean_kept_visual < dense.mean_kept_visual
    assert fastv.mean_kept_visual == 4 and schedule.mean_kept_visual == 8
    assert set(schedule.kept_visual_by_step) == {8} and set(dense.kept_visual_by_step) == {16}
    assert 1 <= len(schedule.kept_visual_by_step) <= 4
    assert [r.family for r in rows] == ["dense", "schedule", "fastv"]
    assert set(dense.outputs) == {it.key for it in items} and dense.tokens_per_s > 0
    # A request's answer does not depend on its batch.
    alone = run_policy(engine, items, eval_policy(parse_policy("schedule:3:0.5")),
                       **{**kw, "batch_size": 1})
    assert alone.outputs == schedule.outputs
    # A rising rate shows in the kept tokens per step: 12, 8, then 4 of 16.
    ramp = run_policy(engine, items, eval_policy(parse_policy("ramp:3:0.25:0.75:2")), **kw)
    steps = len(ramp.kept_visual_by_step)
    assert steps >= 3 and ramp.kept_visual_by_step == [12, 8, 4, 4][:steps]
    # KV reads: none saved by dense; the ramp, past the schedule's 8 kept from step 2, reads less;
    # the schedule's figure is the engine's own counts of the same calls.
    assert dense.kv_read_reduction == 0 < schedule.kv_read_reduction
    assert ramp.kv_read_reduction > schedule.kv_read_reduction
    results, _ = generate_all(engine, items, parse_policy("schedule:3:0.5"), max_new_tokens=4,
                              batch_size=2, progress=False)
    reads = [kv_reads_of(engine.decoder, r.stats, 3) for r in results]
    assert schedule.kv_read_reduction == pytest.approx(
        1 - sum(r for r, _ in reads) / sum(d for _, d in reads))

    shares = attention_shares(engine, items, 1, **kw)
    assert shares["requests"][0] == len(items) and shares["monitor_layer"] == 1
    for step in shares["steps"]:
        assert sum(shares["shares"][t][step] for t in shares["shares"]) == pytest.approx(1, 1e-4)
    assert shares["shares"]["response"][0] == 0  # the prefill's last token is in the prompt
    for path in (pareto_plot(rows, tmp_path / "p.png"), attention_plot(shares, tmp_path / "a.png"),
                 kept_plot([*rows, ramp], tmp_path / "k.png")):
        assert path.stat().st_size > 1000
    assert kept_plot([fastv], tmp_path / "none.png") is None  # nothing that changes per step


def test_mean_by_step_averages_over_the_requests_still_answering():
    assert mean_by_step([[1, 2, 3], [3], [5, 4]]) == [3, 3, 3]
    assert mean_by_step([]) == []


def test_random_keep_and_pooling_rows(tiny):
    """Random-keep keeps as many tokens as the schedule at its rate; pooling's FLOPs count
    against dense decoding of the unpooled prompt, so it equals the analytical saving of the
    shorter prompt in every layer."""
    from dyrate_engine.eval.harness import dense_flops_of, pooled_entry
    from dyrate_engine.models import PooledGrid

    engine = Engine.from_pretrained(tiny / "model")
    items = load_eval_set(str(tiny / "set.jsonl"))
    kw = dict(max_new_tokens=4, batch_size=2, progress=False)
    dense = run_policy(engine, items, eval_policy(parse_policy("dense")), **kw)
    random_row = run_policy(engine, items, eval_policy(parse_policy("random:3:0.5:1")), **kw)
    pool = run_policy(engine, items, pooled_entry(2), **kw)
    assert random_row.family == "random" and random_row.mean_kept_visual == 8
    assert pool.family == "pool" and pool.label == "pool(2x2)"
    assert pool.mean_visual == 16 and pool.mean_kept_visual == 4
    # the dense FLOPs of the unpooled prompt, recomputed from the cache lengths, are the
    # engine's own dense count for a dense run (extra 0) and exceed the pooled run's FLOPs
    results = engine.generate([it.load_image() for it in items], [it.prompt for it in items],
                              max_new_tokens=4)
    for r in results:
        assert dense_flops_of(engine.decoder, r.stats) == sum(r.stats.dense_flops)
    pooled = engine.with_model(PooledGrid(engine.model, 2))
    short = pooled.generate([it.load_image() for it in items], [it.prompt for it in items],
                            max_new_tokens=4)
    for r, full in zip(short, results):  # the prefill of the unpooled prompt, counted apart
        assert dense_flops_of(engine.decoder, type(r.stats)(
            cache_lengths=r.stats.cache_lengths[:1]), 12) == full.stats.dense_flops[0]
    want = 1 - sum(sum(r.stats.flops) for r in short) / sum(
        dense_flops_of(engine.decoder, r.stats, 12) for r in short)
    assert pool.flops_reduction == pytest.approx(want) and 0 < want < 1
    assert dense.flops_reduction == 0


def test_cli_eval_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "--model", str(tiny / "model"), "--data", str(tiny / "set.jsonl"),
                 "--policy", "schedule:3:0.5", "--sweep", "--sweep-rates", "0.75",
                 "--sweep-ratios", "0.5", "--sweep-random", "0.75", "--random-seeds", "0,1",
                 "--sweep-pool", "2", "--max-new-tokens", "3", "--batch-size", "2",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    labels = [p["label"] for p in report["policies"]]
    assert labels == ["dense", "schedule(K=3,0.5)", "schedule(K=3,0.75)", "fastv(K=2,R=0.5)",
                      "random(K=3,0.75,seed=0)", "random(K=3,0.75,seed=1)", "pool(2x2)"]
    assert all(label in printed for label in labels) and "CIDEr" in printed
    assert report["images"] == 3 and report["attention_shares"]["monitor_layer"] == 2
    for name in ("pareto.png", "pareto_kv.png", "attention_shares.png", "kept_by_step.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.parametrize("args", [["--data", "nowhere.jsonl"], ["--data", "demo-nosuch:3"],
                                  ["--coco", "nowhere.json"]])
def test_cli_eval_bad_data_exits_2(args, tmp_path, capsys):
    assert main(["eval", *args, "--out", str(tmp_path)]) == 2
    assert "dyrate: error:" in capsys.readouterr().err


def test_records_with_several_images(tiny, tmp_path):
    """A JSONL record may list several images: the harness shows them all, in order, and the
    predictor's training data encodes them the same way."""
    from dyrate_engine.train import collate, encode

    record = {"image": ["0.png", "1.png"], "prompt": "Describe the image.", "answer": "a b"}
    (tiny / "pairs.jsonl").write_text(json.dumps(record) + "\n")
    [item] = load_eval_set(str(tiny / "pairs.jsonl"))
    assert [str(p) for p in item.image] == [str(tiny / "0.png"), str(tiny / "1.png")]
    engine = Engine.from_pretrained(tiny / "model")
    result = run_policy(engine, [item], eval_policy(parse_policy("schedule:3:0.5")),
                        max_new_tokens=3, batch_size=1, progress=False)
    assert result.mean_visual == 32 and result.mean_kept_visual == 16
    from dyrate_engine.data import load_jsonl
    [example] = encode(engine.model, load_jsonl(tiny / "pairs.jsonl"))
    assert example.pixel_values.shape[0] == 2
    assert collate([example], engine.model).layouts[0].n_images == 2


def test_cli_eval_refuses_prompts_the_tokenizer_cannot_spell(tiny, tmp_path, capsys):
    """A word-level model asked in words it never learned (e.g. a demo model trained before the
    detail task) gets a clear error before any generation, not unknown-token answers."""
    record = {"image": str(tiny / "0.png"), "prompt": "Describe the zebra.", "answer": "x"}
    (tmp_path / "odd.jsonl").write_text(json.dumps(record) + "\n")
    code = main(["eval", "--model", str(tiny / "model"), "--data", str(tmp_path / "odd.jsonl"),
                 "--policy", "dense", "--no-progress", "--out", str(tmp_path / "out")])
    assert code == 2 and "does not know some words" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dyrate_labels_tell_trained_predictors_apart():
    from dyrate_engine.policies import DyRate
    from dyrate_engine.predictor import RatePredictor

    def label(**config):
        policy = DyRate(RatePredictor(2), 2)
        policy.meta = {"training": {"lam": 0.5, "config": config}}
        return eval_policy(policy).label

    assert label() == "dyrate(K=2,lam=0.5)" == label(lr=1e-2, seed=0, budget=None)
    assert label(budget=0.7, seed=2) == "dyrate(K=2,lam=0.5,budget=0.7,seed=2)"
    assert label(flops_budget=0.7) == "dyrate(K=2,lam=0.5,budget=0.7)"  # an older artifact
    assert label(lr=2e-4) == "dyrate(K=2,lam=0.5,lr=0.0002)"
    assert label(cost="kv", budget=0.6) == "dyrate(K=2,lam=0.5,budget=0.6,cost=kv)"
