"""Video on Qwen2-VL, Qwen2.5-VL and Qwen3-VL (tiny checkpoints): frames become the tower's patches as
transformers' processors make them (checked against the image processor on a still clip), a
video alone, beside an image and in a ragged batch decodes as transformers' generate does, token
for token (Qwen2.5-VL's positions scale with the frame rate), pruning equals the masked
reference, and what cannot run is a clear error."""
import numpy as np
import pytest
import torch
from PIL import Image

from dyrate_engine import DyRate, Engine, FastV, Schedule
from dyrate_engine.models.video import MAX_FRAMES, Video, video_patches
from masked_reference import assert_pruning_equals_masked_reference
from tiny_families import build_tiny_llava_next, build_tiny_qwen_vl
from tiny_models import hf_greedy

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module", params=VIDEO_FAMILIES)
def family(request, tmp_path_factory):
    import transformers

    path = build_tiny_qwen_vl(tmp_path_factory.mktemp(request.param), request.param)
    engine = Engine.from_pretrained(path)
    hf = getattr(transformers, engine.model.hf_class).from_pretrained(path, dtype=torch.float32)
    return engine, hf.eval()


def _frames(n, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _image(height, width, seed=1):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


REQUESTS = {  # (images per prompt, videos per prompt, prompts)
    "video": ([None], [Video(_frames(4, 30, 44), fps=2.0)], ["Describe the video."]),
    "image then slow video": ([_image(40, 30)], [Video(_frames(5, 44, 30), fps=0.5)],
                              ["What is this?"]),
    "ragged batch": ([None, [_image(30, 30), _image(20, 50, 2)], _image(45, 45)],
                     [_frames(3, 28, 28, 3), None, [Video(_frames(2, 30, 60, 4), fps=1.0),
                                                    Video(_frames(6, 28, 42, 5))]],
                     ["What is this?", "Describe the image.", "Describe the video."]),
}


def _kinds(model, ids):
    return [torch.where(x == model.video_token_id, 2, (x == model.image_token_id).long())
            for x in ids]


@pytest.mark.parametrize("which", sorted(REQUESTS))
def test_dense_greedy_equals_transformers(family, which):
    engine, hf = family
    images, videos, prompts = REQUESTS[which]
    ids, vision = engine.model.encode(images, prompts, videos)
    assert "pixel_values_videos" in vision.tensors
    extra = {k: v for k, v in vision.tensors.items() if k != "pixel_values"}
    expected_tokens, expected_logits = hf_greedy(
        hf, ids, vision.get("pixel_values"), 8, mm_token_type_ids=_kinds(engine.model, ids),
        **extra)
    results = engine.generate_ids(ids, max_new_tokens=8, output_logits=True, **vision.tensors)
    for r, tokens, logits in zip(results, expected_tokens, expected_logits):
        assert r.token_ids == tokens
        torch.testing.assert_close(r.logits, logits, atol=1e-4, rtol=0)


def test_the_frame_rate_moves_what_each_family_says_it_moves(family):
    """Qwen2-VL ignores the rate; Qwen2.5-VL spaces the frame pairs' positions by it; Qwen3-VL
    writes each pair's time into the prompt. The pixels never change."""
    engine, _ = family
    model = engine.model
    encoded = [model.encode(None, "What is this?", Video(_frames(4, 28, 28), fps=fps))
               for fps in (0.5, 2.0)]
    (slow_ids, slow), (fast_ids, fast) = encoded
    assert torch.equal(slow["pixel_values_videos"], fast["pixel_values_videos"])
    if model.family == "qwen3_vl":  # (the tiny word-level tokenizer reads any time as unknown)
        grid = slow["video_grid_thw"][0]
        texts = {model.video_placeholder(Video(_frames(4, 28, 28), fps), grid) for fps in (0.5, 2)}
        assert len(texts) == 2
        return
    assert all(torch.equal(a, b) for a, b in zip(slow_ids, fast_ids))
    rope = [model.positions(ids, model.visual_layouts(ids, v), v)[0][0] for ids, v in encoded]
    assert torch.equal(rope[0], rope[1]) == (model.family == "qwen2_vl")


def test_qwen3_vl_writes_each_frame_pairs_time(tmp_path):
    engine = Engine.from_pretrained(build_tiny_qwen_vl(tmp_path, "qwen3_vl"))
    model = engine.model
    clip = Video(_frames(5, 32, 32), fps=2.0)  # pairs (0, 1), (2, 3), (4, 4): 0.25, 1.25, 2.0 s
    ids, vision = model.encode(None, "What is this?", clip)
    text = model.video_placeholder(clip, vision["video_grid_thw"][0])
    assert [part.split(">")[0] for part in text.split("<")[1:] if "seconds" in part] == \
        ["0.2 seconds", "1.2 seconds", "2.0 seconds"]
    layout = model.visual_layouts(ids, vision)[0]
    assert len(layout.spans) == 3 and layout.n_videos == 1


@pytest.mark.parametrize("prune_layer", [1, 2])
@pytest.mark.parametrize("policy", ["fastv", "schedule", "dyrate"])
def test_pruning_equals_the_masked_reference(family, policy, prune_layer):
    """K = 1 prunes inside Qwen3-VL's DeepStack layers: a dropped frame token's DeepStack
    features go with it."""
    engine, _ = family
    table = torch.tensor([[0.3, 0.5, 0.5, 0.8, 0.9, 0.9], [0.6, 0.0, 0.7, 0.7, 0.95, 0.95],
                          [0.1, 0.3, 0.6, 0.6, 0.9, 0.9]])
    make = {"fastv": lambda: FastV(prune_layer=prune_layer, ratio=0.5),
            "schedule": lambda: Schedule([0.0, 0.5, 0.75], prune_layer=prune_layer),
            "dyrate": lambda: DyRate(lambda stats: table[:, stats.step],
                                     prune_layer=prune_layer)}[policy]
    images, videos, prompts = REQUESTS["ragged batch"]
    ids, vision = engine.model.encode(images, prompts, videos)
    assert_pruning_equals_masked_reference(engine, ids, vision, make, 6)


def test_a_still_clip_is_patched_as_the_image_processor_patches_its_frame(family):
    """The image processor repeats an image over the temporal patch; a clip of that image
    twice must give the same patches in the same order."""
    engine, _ = family
    settings = engine.model.processor.image_processor
    image = _image(44, 70)
    expected = settings(images=[image], return_tensors="pt")
    patches, grid = video_patches(
        [image, image], patch=settings.patch_size, merge=settings.merge_size,
        temporal=settings.temporal_patch_size, mean=settings.image_mean, std=settings.image_std,
        min_pixels=settings.size.shortest_edge, max_pixels=settings.size.longest_edge)
    assert grid.tolist() == expected["image_grid_thw"][0].tolist()
    torch.testing.assert_close(patches, expected["pixel_values"], atol=1e-5, rtol=0)


def test_encoding_by_parts_equals_the_processor_for_images(family):
    engine, _ = family
    model = engine.model
    images, prompts = [[_image(30, 70), _image(45, 45)], _image(40, 30)], ["What is this?"] * 2
    ids, vision = model.encode(images, prompts)
    part_ids, part_vision = model.encode_by_parts(*model.media_per_prompt(images, prompts))
    assert all(torch.equal(a, b) for a, b in zip(ids, part_ids))
    assert vision.tensors.keys() == part_vision.tensors.keys()
    for name in vision.tensors:
        torch.testing.assert_close(vision[name], part_vision[name], atol=0, rtol=0)


def test_bad_video_input_is_a_clear_error(family, tmp_path):
    engine, _ = family
    generate = engine.generate
    with pytest.raises(ValueError, match="non-empty list of frames"):
        generate(None, "What is this?", videos=[], max_new_tokens=1)
    with pytest.raises(ValueError, match="fps must be positive"):
        Video(_frames(2, 28, 28), fps=0)
    with pytest.raises(ValueError, match=f"at most {MAX_FRAMES} frames"):
        generate(None, "What is this?", videos=_frames(MAX_FRAMES + 1, 2, 2), max_new_tokens=1)
    with pytest.raises(ValueError, match="prompt 0 has no image"):
        generate([None], ["What is this?"], videos=[None], max_new_tokens=1)
    with pytest.raises(ValueError, match="2 prompts but 1 video entries"):
        generate([None, None], ["a", "b"], videos=[_frames(2, 28, 28)], max_new_tokens=1)
    ids, vision = engine.model.encode(None, "What is this?", _frames(2, 28, 28))
    grids = vision["video_grid_thw"]
    with pytest.raises(ValueError, match="pixel_values_videos must be"):
        engine.generate_ids(ids, max_new_tokens=1, **dict(vision.tensors, video_grid_thw=grids * 2))
    with pytest.raises(ValueError, match="image_sizes: not an input of a 'qwen"):
        engine.generate_ids(ids, max_new_tokens=1, image_sizes=torch.ones(1, 2), **vision.tensors)
    [result] = engine.generate_ids(ids, max_new_tokens=2, **vision.tensors)
    assert result.stats.n_visual == int(grids.prod()) // 4


def test_a_family_without_video_refuses_it(tmp_path):
    clip = _frames(2, 28, 28)
    engine = Engine.from_pretrained(build_tiny_llava_next(tmp_path / "next"))
    with pytest.raises(ValueError, match="'llava_next' model takes no video input"):
        engine.generate(_image(30, 30), "What is this?", videos=clip, max_new_tokens=1)
    assert len(engine.generate(_image(30, 30), "What is this?", max_new_tokens=1)) == 1


def test_the_cli_reads_a_gif_and_a_frame_directory(family, tmp_path, capsys):
    from dyrate_engine.cli import main
    from dyrate_engine.models.video import open_video

    engine, _ = family
    frames = [Image.fromarray(f) for f in _frames(3, 28, 42, 7)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=500)
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(frames):
        frame.save(tmp_path / "frames" / f"f{i:02d}.png")
    clip = open_video(tmp_path / "frames", fps=1.0)
    assert len(clip.frames) == 3 and clip.fps == 1.0
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(clip.frames, frames))
    assert len(open_video(tmp_path / "clip.gif").frames) == 3
    expected = engine.generate(None, "What is this?", videos=clip, max_new_tokens=4)[0]
    path = str(engine.model.hf.name_or_path)
    assert main(["generate", "--model", path, "--video", str(tmp_path / "frames"), "--fps", "1",
                 "--prompt", "What is this?", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == expected.text.strip()
    n = expected.stats.n_visual
    assert f"kept visual tokens {n}/{n}" in out.err
    assert main(["generate", "--model", path, "--prompt", "What is this?"]) == 2
    assert "at least one --image or --video" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frame images"):
        open_video(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="not a frame directory or an animated image"):
        open_video(tmp_path / "notes.txt")


def test_image_files_are_decoded_under_a_pixel_limit(tmp_path):
    from dyrate_engine.models.images import open_image

    _image(40, 30).save(tmp_path / "a.png")
    assert open_image(tmp_path / "a.png").size == (30, 40)
    with pytest.raises(ValueError, match="40x30|30x40"):
        open_image(tmp_path / "a.png", max_pixels=1000)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not an image file"):
        open_image(tmp_path / "b.png")
