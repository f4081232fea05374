"""Visual-token dropout for training the demo VLM: under teacher forcing it must be the
engine's prefill pruning, so that what the model learns is what the engine will run."""
import pytest
import torch

from dyrate_engine import Engine, Schedule
from dyrate_engine.demo.token_drop import IGNORE, VisualTokenDrop
from tiny_models import IMAGE_TOKEN, build_tiny_llava, random_prompts

K = 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("m"), layers=4))


def _answer(result):
    """The answer up to a generated image token id (a random model may make one; HF would then
    count one image token too many)."""
    ids = result.token_ids
    return ids[:ids.index(IMAGE_TOKEN)] if IMAGE_TOKEN in ids else ids


def _teacher_batch(ids, results):
    """Right-padded prompt + answer rows with answer-only labels, as train_vlm makes them."""
    rows = [torch.cat([i, torch.tensor(_answer(r), dtype=torch.long)]) for i, r in zip(ids, results)]
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE)
    mask = torch.zeros_like(input_ids)
    for b, (row, prompt) in enumerate(zip(rows, ids)):
        input_ids[b, :len(row)] = row
        labels[b, len(prompt):len(row)] = row[len(prompt):]
        mask[b, :len(row)] = 1
    return input_ids, labels, mask


@pytest.mark.parametrize("padding_mask", [True, False])  # train_vlm passes none (right padding)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.75, 0.9])
def test_dropout_forward_equals_the_engines_prefill_pruning(engine, rate, attn, padding_mask):
    ids, pixels = random_prompts(3, seed=4)
    results = engine.generate_ids(ids, pixels, policy=Schedule([rate], prune_layer=K),
                                  max_new_tokens=5, output_logits=True)
    input_ids, labels, mask = _teacher_batch(ids, results)
    hf = engine.model.hf
    hf.config._attn_implementation = attn
    hf.model.language_model.config._attn_implementation = attn
    try:
        with torch.no_grad(), VisualTokenDrop(hf, K, [rate], IMAGE_TOKEN) as drop:
            drop.set_batch(input_ids, labels, mask)
            logits = hf(input_ids=input_ids, attention_mask=mask if padding_mask else None,
                        pixel_values=pixels).logits
    finally:
        hf.config._attn_implementation = hf.model.language_model.config._attn_implementation = "sdpa"
    for b, r in enumerate(results):
        start, n = len(ids[b]) - 1, min(len(_answer(r)) + 1, len(r.token_ids))
        torch.testing.assert_close(logits[b, start:start + n], r.logits[:n], atol=1e-4, rtol=0)


def test_hooks_are_removed_on_exit(engine):
    ids, pixels = random_prompts(2, seed=2)
    dense = engine.generate_ids(ids, pixels, max_new_tokens=3, output_logits=True)
    input_ids, labels, mask = _teacher_batch(ids, dense)
    hf = engine.model.hf
    with torch.no_grad():
        with VisualTokenDrop(hf, K, [0.9], IMAGE_TOKEN) as drop:
            drop.set_batch(input_ids, labels, mask)
            pruned = hf(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits
        after = hf(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits
    start = len(ids[0]) - 1
    torch.testing.assert_close(after[0, start], dense[0].logits[0], atol=1e-4, rtol=0)
    assert (pruned[0, start] - after[0, start]).abs().max() > 1e-3


def test_rates_are_drawn_per_row_from_the_given_set(engine):
    ids, _ = random_prompts(64, seed=3)
    input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
    labels = torch.full_like(input_ids, IGNORE)
    labels[:, -1] = 5
    drop = VisualTokenDrop(engine.model.hf, K, [0.0, 0.5], IMAGE_TOKEN, torch.Generator().manual_seed(0))
    drop.set_batch(input_ids, labels, torch.ones_like(input_ids))
    assert set(drop.batch["rate"].tolist()) == {0.0, 0.5}


@pytest.mark.parametrize("layer, rates", [(0, [0.5]), (4, [0.5]), (2, [1.0]), (2, [-0.1]), (2, [])])
def test_bad_settings_are_refused(engine, layer, rates):
    with pytest.raises(ValueError):
        VisualTokenDrop(engine.model.hf, layer, rates, IMAGE_TOKEN)
