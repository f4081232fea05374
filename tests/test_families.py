"""The families beyond LLaVA-1.5 (LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL) on tiny
checkpoints with real processors: dense decoding equals transformers token for token, one image
at two resolutions (different tile layouts or patch grids, so different visual token counts),
several images per prompt and a ragged batch mixing them; pruning equals the masked reference
(M-RoPE positions kept); bad input is a clear error."""
import numpy as np
import pytest
import torch
from PIL import Image

from dyrate_engine import DyRate, Engine, FastV, Schedule
from masked_reference import assert_pruning_equals_masked_reference
from tiny_families import build_tiny_llava_next, build_tiny_llava_onevision, build_tiny_qwen_vl
from tiny_models import hf_greedy

FAMILIES = {"next-llama": lambda d: build_tiny_llava_next(d, kind="llama"),
            "next-mistral": lambda d: build_tiny_llava_next(d, kind="mistral"),
            "onevision-qwen2": lambda d: build_tiny_llava_onevision(d, kind="qwen2"),
            "qwen2-vl": lambda d: build_tiny_qwen_vl(d, "qwen2_vl"),
            "qwen2.5-vl": lambda d: build_tiny_qwen_vl(d, "qwen2_5_vl"),
            "qwen3-vl": lambda d: build_tiny_qwen_vl(d, "qwen3_vl")}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    import transformers

    path = FAMILIES[request.param](tmp_path_factory.mktemp(request.param))
    engine = Engine.from_pretrained(path)
    hf = getattr(transformers, engine.model.hf_class).from_pretrained(path, dtype=torch.float32)
    return engine, hf.eval()


def _images(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(30, 70), (75, 40), (28, 28), (45, 45)]  # wide, tall, one tile, square
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


REQUESTS = {
    "wide": ([0], ["Describe the image."]),
    "tall": ([1], ["What is this?"]),
    "two images": ([[0, 2]], ["Describe the image."]),
    "ragged batch": ([3, [1, 0], 2], ["What is this?", "Describe the image.", "What is this?"]),
}


def _encode(engine, which):
    pictures = _images()
    indices, prompts = REQUESTS[which]
    images = [[pictures[i] for i in x] if isinstance(x, list) else pictures[x] for x in indices]
    ids, vision = engine.model.encode(images, prompts)
    return ids, vision


@pytest.mark.parametrize("which", sorted(REQUESTS))
def test_dense_greedy_equals_transformers(family, which):
    engine, hf = family
    ids, vision = _encode(engine, which)
    extra = {k: v for k, v in vision.tensors.items() if k != "pixel_values"}
    if engine.model.family.startswith("qwen"):
        extra["mm_token_type_ids"] = [(x == engine.model.image_token_id).long() for x in ids]
    expected_tokens, expected_logits = hf_greedy(hf, ids, vision["pixel_values"], 8, **extra)
    results = engine.generate_ids(ids, max_new_tokens=8, output_logits=True, **vision.tensors)
    for r, tokens, logits in zip(results, expected_tokens, expected_logits):
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)


def test_resolutions_make_different_token_counts(family):
    engine, _ = family
    counts = {which: [r.stats.n_visual for r in engine.generate_ids(
        *_encode(engine, which)[:1], max_new_tokens=1, **_encode(engine, which)[1].tensors)]
        for which in ("wide", "tall")}
    assert counts["wide"] != counts["tall"]


@pytest.mark.parametrize("prune_layer", [1, 2])
@pytest.mark.parametrize("policy", ["fastv", "schedule", "dyrate"])
def test_pruning_equals_the_masked_reference(family, policy, prune_layer):
    """K = 1 prunes inside Qwen3-VL's DeepStack layers (0 and 1): the dropped tokens' DeepStack
    features must go with them."""
    engine, _ = family
    table = torch.tensor([[0.2, 0.5, 0.5, 0.8, 0.9, 0.9], [0.6, 0.6, 0.7, 0.7, 0.95, 0.95],
                          [0.0, 0.3, 0.3, 0.3, 0.9, 0.9]])
    K = prune_layer
    make = {"fastv": lambda: FastV(prune_layer=K, ratio=0.5),
            "schedule": lambda: Schedule([0.0, 0.5, 0.75], prune_layer=K),
            "dyrate": lambda: DyRate(lambda stats: table[:, stats.step], prune_layer=K)}[policy]
    ids, vision = _encode(engine, "ragged batch")
    assert_pruning_equals_masked_reference(engine, ids, vision, make, 6)


@pytest.mark.parametrize("policy", ["dense", "schedule", "dyrate"])
def test_static_step_equals_dynamic_step(family, policy):
    """M-RoPE positions, AnyRes newline tokens and several images per prompt on the static
    decode step: the dynamic step's tokens, kept sets and logits."""
    engine, _ = family
    table = torch.tensor([[0.2, 0.5, 0.5, 0.8, 0.9, 0.9], [0.6, 0.6, 0.7, 0.7, 0.95, 0.95],
                          [0.0, 0.3, 0.3, 0.3, 0.9, 0.9]])
    make = {"dense": lambda: None,
            "schedule": lambda: Schedule([0.0, 0.5, 0.75], prune_layer=2),
            "dyrate": lambda: DyRate(lambda stats: table[:, stats.step], prune_layer=2)}[policy]
    ids, vision = _encode(engine, "ragged batch")
    static = Engine(engine.model, decode_step="static")
    runs = [e.generate_ids(ids, policy=make(), max_new_tokens=6, output_logits=True,
                           **vision.tensors) for e in (engine, static)]
    for expected, result in zip(*runs):
        assert result.token_ids == expected.token_ids
        assert result.stats.kept_visual == expected.stats.kept_visual
        torch.testing.assert_close(result.logits, expected.logits, atol=1e-4, rtol=0)


def _bad_vision(t: dict) -> list[tuple[dict, str]]:
    if "image_grid_thw" in t:
        grids = t["image_grid_thw"]
        return [(dict(t, image_grid_thw=grids[:2]), "pixel_values must be"),
                (dict(t, image_grid_thw=grids[:, :2]), "image_grid_thw must be"),
                (dict(t, pixel_values=t["pixel_values"][:, :100]), "pixel_values must be")]
    return [(dict(t, image_sizes=t["image_sizes"][:2]), "image_sizes must be"),
            (dict(t, pixel_values=t["pixel_values"][..., :20, :20]), "tiles must be 28x28")]


def test_bad_input_is_a_clear_error_and_the_engine_works_after(family):
    engine, _ = family
    ids, vision = _encode(engine, "ragged batch")
    for tensors, message in _bad_vision(vision.tensors):
        with pytest.raises(ValueError, match=message):
            engine.generate_ids(ids, max_new_tokens=2, **tensors)
    one_ids, one_vision = _encode(engine, "wide")
    with pytest.raises(ValueError, match="2 prompts but 1 images"):
        engine.generate_ids([one_ids[0], one_ids[0]], max_new_tokens=2, **one_vision.tensors)
    assert len(engine.generate_ids(ids, max_new_tokens=2, **vision.tensors)) == 3


def test_a_predictor_trains_on_qwen2_5_vl_and_is_refused_by_another_family(tmp_path, capsys):
    """dyrate train-predictor on a tiny Qwen2.5-VL (M-RoPE positions in the masking forward):
    the artifact records its family, runs on that model, and another family refuses it."""
    import json

    from dyrate_engine.cli import main

    qwen = build_tiny_qwen_vl(tmp_path / "qwen", "qwen2_5_vl")
    lines = []
    for i, image in enumerate(_images(3)):
        image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "prompt": "Describe the image.",
                                 "answer": f"w{i} w{i + 2} the"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    assert main(["train-predictor", "--model", str(qwen), "--data", str(tmp_path / "data.jsonl"),
                 "--out", str(tmp_path / "p"), "--steps", "3", "--batch-size", "2",
                 "--prune-layer", "2", "--rates", "0,0.5"]) == 0
    meta = json.loads((tmp_path / "p" / "predictor.json").read_text())
    assert meta["family"] == "qwen2_5_vl" and meta["training"]["examples"] == 3
    policy = DyRate.from_pretrained(tmp_path / "p")
    [result] = Engine.from_pretrained(qwen).generate(_images()[0], "What is this?", policy,
                                                     max_new_tokens=3)
    assert set(result.stats.rates) <= {0.0, 0.5}
    other = Engine.from_pretrained(build_tiny_llava_next(tmp_path / "next"))
    with pytest.raises(ValueError, match="trained on a 'qwen2_5_vl' model; this is a "
                                         "'llava_next' model"):
        other.generate(_images()[0], "What is this?", policy, max_new_tokens=2)


@pytest.mark.parametrize("which, K", [("qwen2_5_vl", 2), ("qwen3_vl", 1), ("qwen3_vl", 3)])
def test_the_masking_forward_equals_the_engines_pruning_under_m_rope(tmp_path, which, K):
    """Teacher-forced rows with the prompt's M-RoPE positions: the training forward's logits
    under one hard rate are the engine's Schedule logits (several images, ragged). Qwen3-VL's
    DeepStack layers (0 and 1) fall on both sides of K."""
    from dyrate_engine.train import Example, collate
    from dyrate_engine.train.masked_forward import (deepstack, embed, keep_masks, monitor_pass,
                                                    pruned_pass)

    engine = Engine.from_pretrained(build_tiny_qwen_vl(tmp_path, which))
    pictures = _images()
    images, prompts = [[pictures[0], pictures[2]], pictures[1]], ["Describe the image.", "What is this?"]
    batch_ids, batch_vision = engine.model.encode(images, prompts)
    results = engine.generate_ids(batch_ids, policy=Schedule([0.5], prune_layer=K),
                                  max_new_tokens=5, output_logits=True, **batch_vision.tensors)
    examples = []
    for own, prompt, r in zip(images, prompts, results):
        ids, vision = engine.model.encode([own], [prompt])
        examples.append(Example(ids[0], torch.tensor(r.token_ids), vision["pixel_values"],
                                extra={k: v for k, v in vision.tensors.items()
                                       if k != "pixel_values"}))
    batch = collate(examples, engine.model)
    assert batch.positions.shape[0] == 3
    with torch.no_grad():
        L = engine.decoder.n_layers
        h, _, scores = monitor_pass(engine.decoder, embed(engine.model, batch), batch, K,
                                    deepstack(engine.model, batch, range(K)))
        masks = keep_masks(scores, batch.n_visual, [0.5])
        first = (batch.prompt_len - 1)[:, None, None, None].expand_as(masks)
        logits = pruned_pass(engine.decoder, h, batch, K, masks.gather(1, first),
                             torch.ones(masks.shape[:3]), deepstack(engine.model, batch, range(K, L)))
    for b, r in enumerate(results):
        start = int(batch.prompt_len[b]) - 1
        torch.testing.assert_close(logits[b, start:start + len(r.token_ids)], r.logits,
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["onevision-qwen2", "qwen2.5-vl"])
def test_dyrate_eval_runs_on_the_family(which, tmp_path):
    """`dyrate eval` on a family: its dense outputs are the engine's own answers, and the
    schedules keep fewer visual tokens."""
    import json

    from dyrate_engine.cli import main

    path = FAMILIES[which](tmp_path / "model")
    lines = []
    for i, image in enumerate(_images(5)[:3]):
        image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "prompt": "Describe the image.",
                                 "answer": "w1 w2 the"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    assert main(["eval", "--model", str(path), "--data", str(tmp_path / "data.jsonl"),
                 "--out", str(tmp_path / "out"), "--max-new-tokens", "4"]) == 0
    rows = {r["label"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())
            ["policies"]}
    engine = Engine.from_pretrained(path)
    expected = engine.generate(_images(5)[:3], ["Describe the image."] * 3, max_new_tokens=4)
    outputs = rows["dense"]["outputs"]  # keyed by the image's path
    texts = [next(v["text"] for k, v in outputs.items() if k.endswith(f"{i}.png")) for i in range(3)]
    assert texts == [r.text for r in expected]
    schedule = rows["schedule(K=3,0.75)"]
    assert schedule["mean_kept_visual"] < schedule["mean_visual"] == rows["dense"]["mean_visual"]


def test_a_training_batch_runs_the_vision_tower_once(tmp_path):
    """LLaVA-NeXT counts an image's tokens from its features: collating a batch runs the
    tower, and the masking forward's embedding reuses those features."""
    from dyrate_engine.train import Example, collate
    from dyrate_engine.train.masked_forward import embed

    engine = Engine.from_pretrained(build_tiny_llava_next(tmp_path))
    ids, vision = engine.model.encode(_images()[:2], ["What is this?"] * 2)
    examples = [Example(x, torch.tensor([5, 2]), vision["pixel_values"][i:i + 1],
                        extra={"image_sizes": vision["image_sizes"][i:i + 1]})
                for i, x in enumerate(ids)]
    calls = []
    tower = engine.model.hf.model.get_image_features
    engine.model.hf.model.get_image_features = lambda *a, **k: calls.append(1) or tower(*a, **k)
    try:
        embed(engine.model, collate(examples, engine.model).to("cpu"))
    finally:
        del engine.model.hf.model.get_image_features
    assert len(calls) == 1


def test_one_ranks_shard_read_from_the_files_equals_the_whole_model(family, tmp_path):
    """Tensor parallelism's loading path (a gloo group of one rank): the text layers read from the
    safetensors files under the family's key names equal the ones transformers loaded."""
    import torch.distributed as dist

    from dyrate_engine.models import load_model
    from dyrate_engine.models.sharding import shard_model
    from dyrate_engine.models.tensor_parallel import init_tensor_parallel

    engine, _ = family
    path = engine.model.hf.name_or_path
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/group", rank=0, world_size=1)
    try:
        model = load_model(path, text_layers=False)
        shard_model(model, path, init_tensor_parallel(1, "cpu"))
        ids, vision = _encode(engine, "ragged batch")
        got = Engine(model).generate_ids(ids, max_new_tokens=6, output_logits=True,
                                         policy=Schedule([0.0, 0.5], prune_layer=1), **vision.tensors)
    finally:
        dist.destroy_process_group()
    expected = engine.generate_ids(ids, max_new_tokens=6, output_logits=True,
                                   policy=Schedule([0.0, 0.5], prune_layer=1), **vision.tensors)
    for r, e in zip(got, expected):
        assert r.token_ids == e.token_ids and r.stats.kept_visual == e.stats.kept_visual
        torch.testing.assert_close(r.logits, e.logits, atol=0, rtol=0)
