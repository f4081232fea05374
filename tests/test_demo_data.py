"""The demo's synthetic scenes and processor: deterministic, split-disjoint, captions
that name what is drawn, and training inputs identical to what the processor makes."""
import json

import numpy as np
import pytest
import torch

from dyrate_engine.demo.processor import build_processor, chat_prompt, pixel_values
from dyrate_engine.data.scenes import (COLOURS, IMAGE_SIZE, SPLIT_SEEDS, make_scene,
                                       write_split)
from dyrate_engine.demo.train_vlm import SceneEncoder


def test_scenes_are_deterministic_and_splits_differ():
    a, b = make_scene("train", 3), make_scene("train", 3)
    assert a == b and np.array_equal(np.asarray(a.render()), np.asarray(b.render()))
    captions = {split: [make_scene(split, i).caption() for i in range(200)] for split in SPLIT_SEEDS}
    renders = {split: {make_scene(split, i).render().tobytes() for i in range(50)}
               for split in SPLIT_SEEDS}
    assert not renders["train"] & renders["test"] and not renders["val"] & renders["test"]
    assert len(set(captions["test"])) > 150  # varied, not a handful of templates


def test_caption_names_what_is_drawn():
    for i in range(40):
        scene = make_scene("val", i)
        image = np.asarray(scene.render()).astype(int)
        caption = scene.caption()
        assert caption.startswith(f"there {'is' if len(scene.shapes) == 1 else 'are'}")
        assert caption.count(" . a ") == len(scene.shapes)
        for shape in scene.shapes:  # the named colour is really there, in the named cell
            cell = IMAGE_SIZE // 3
            r, c = divmod(shape.cell, 3)
            patch = image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            hit = (np.abs(patch - np.array(COLOURS[shape.colour])).sum(-1) == 0).sum()
            assert hit > 50, (caption, shape)
        assert [s.cell for s in scene.shapes] == sorted(s.cell for s in scene.shapes)


def test_bad_split_and_index():
    with pytest.raises(ValueError, match="unknown split"):
        make_scene("dev", 0)
    with pytest.raises(ValueError, match=">= 0"):
        make_scene("test", -1)


def test_encoder_matches_the_processor_and_captions_round_trip():
    processor = build_processor()
    encoder = SceneEncoder(processor, (IMAGE_SIZE // 8) ** 2)
    scenes = [make_scene("test", i) for i in range(4)]
    batch = encoder.batch(scenes)
    for i, scene in enumerate(scenes):
        ref = processor(text=chat_prompt(processor, scene.prompt), images=scene.render(),
                        return_tensors="pt")
        n = ref["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][i, :n], ref["input_ids"][0])
        torch.testing.assert_close(batch["pixel_values"][i], ref["pixel_values"][0])
        answer = batch["input_ids"][i][batch["labels"][i] != -100]
        assert processor.tokenizer.decode(answer, skip_special_tokens=True) == scene.caption()
        assert int(answer[-1]) == processor.tokenizer.eos_token_id
    assert pixel_values([scenes[0].render()]).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_write_split(tmp_path):
    path = write_split(tmp_path, "val", 3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["answer"] for r in records] == [make_scene("val", i).caption() for i in range(3)]
    assert all((tmp_path / r["image"]).is_file() for r in records)


def test_detail_answer_follows_from_the_scene():
    """The detail task's answer: the caption first, then every cell, the rows and the totals,
    each consistent with the drawn shapes; 100+ words; its own scene stream."""
    from dyrate_engine.data.scenes import PLACES, SHAPES
    for i in range(60):
        scene = make_scene("val", i, "detail")
        answer = scene.detail()
        assert scene.answer() == answer and answer.startswith(scene.caption() + " the top left ")
        assert 100 <= len(answer.split()) <= 130
        cells = {s.cell: s for s in scene.shapes}
        for cell, place in enumerate(PLACES):
            said = f"the {place} has {cells[cell].described()} ." if cell in cells \
                else f"the {place} is empty ."
            assert said in answer
        for row, name in enumerate(("top", "middle", "bottom")):
            k = sum(s.cell // 3 == row for s in scene.shapes)
            assert f"the {name} row has {['no', 'one', 'two', 'three'][k]} shape" in answer
        words = ["no", "one", "two", "three"]
        totals = [f"{words[k]} {kind}{'' if k == 1 else 's'}"
                  for kind in SHAPES for k in [sum(s.kind == kind for s in scene.shapes)]]
        assert answer.endswith(" : " + " , ".join(totals) + " .")
    assert make_scene("test", 0, "detail").shapes != make_scene("test", 0).shapes
    with pytest.raises(ValueError, match="unknown task"):
        make_scene("test", 0, "poem")


def test_mixed_batches_train_on_the_one_padded_batch_objective():
    """A training step over the two tasks' parts (each padded to its own width) gives the loss
    and the (clipped) gradients of one batch padded to the widest answer."""
    import contextlib

    from transformers import LlavaForConditionalGeneration
    from dyrate_engine.demo.train_vlm import _step, demo_config, scene_batch, task_parts

    processor = build_processor()
    encoder = SceneEncoder(processor, (IMAGE_SIZE // 8) ** 2)
    scenes = scene_batch("train", 40, 5, 0.4)
    assert [s.task for s in scenes] == ["detail"] * 2 + ["caption"] * 3
    vocab = processor.tokenizer.get_vocab()
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(demo_config(len(vocab), vocab["<image>"], 2, 64))
    whole = encoder.batch(scenes)
    whole.pop("attention_mask")
    loss = model(**whole).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    class Recorder:  # the optimiser's two calls; step() keeps the gradients it would apply
        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

        def step(self):
            self.grads = {n: p.grad.clone() for n, p in model.named_parameters()
                          if p.grad is not None}

    parts = task_parts(encoder, scenes)
    assert len(parts) == 2 and parts[1]["input_ids"].shape[1] < whole["input_ids"].shape[1]
    recorder = Recorder()
    assert _step(model, recorder, parts, contextlib.nullcontext()) == pytest.approx(
        float(loss.detach()), rel=1e-5)
    assert recorder.grads.keys() == want.keys() and want
    for name, grad in want.items():
        torch.testing.assert_close(recorder.grads[name], grad, atol=1e-6, rtol=1e-4)
