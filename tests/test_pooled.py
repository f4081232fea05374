"""Spatial pooling before the LLM: the pooled features are the grid's block means, the prompt's
image runs shrink to match, and greedy decoding equals transformers' generate on the same
pooled embeddings, token for token."""
import pytest
import torch
from transformers import LlavaForConditionalGeneration

from dyrate_engine import Engine
from dyrate_engine.models import PooledGrid
from dyrate_engine.models.pooled import pool_grid
from tiny_models import IMAGE_TOKEN, build_tiny_llava, random_prompts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = build_tiny_llava(tmp_path_factory.mktemp("pooled"), layers=3)
    hf = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    return Engine.from_pretrained(path), hf


def test_pool_grid_is_block_means():
    grid, d = 6, 5
    features = torch.randn(grid * grid, d)
    blocks = features.reshape(3, 2, 3, 2, d).mean((1, 3)).reshape(9, d)  # 2x2 blocks
    torch.testing.assert_close(pool_grid(features, grid, 3), blocks)
    # 6 -> 4 does not divide: adaptive cells [0,2), [1,3), [3,5), [4,6) on each axis
    cells = [(0, 2), (1, 3), (3, 5), (4, 6)]
    image = features.reshape(grid, grid, d)
    want = torch.stack([image[r0:r1, c0:c1].mean((0, 1)) for r0, r1 in cells for c0, c1 in cells])
    torch.testing.assert_close(pool_grid(features, grid, 4), want)
    torch.testing.assert_close(pool_grid(features, grid, 6), features)


def test_shorten_cuts_each_run_to_whole_pooled_images(checkpoint):
    engine, _ = checkpoint
    pooled = PooledGrid(engine.model, 2)
    full = pooled.grid ** 2
    ids = torch.tensor([1, 5] + [IMAGE_TOKEN] * (2 * full) + [6] + [IMAGE_TOKEN] * full + [7])
    short = pooled.shorten(ids)
    assert short.tolist() == [1, 5] + [IMAGE_TOKEN] * 8 + [6] + [IMAGE_TOKEN] * 4 + [7]
    assert pooled.pooled_away(12) == 3 * (full - 4)
    with pytest.raises(ValueError, match="whole images"):
        pooled.shorten(torch.tensor([1] + [IMAGE_TOKEN] * (full + 1)))


def test_bad_sides_and_families(checkpoint):
    engine, _ = checkpoint
    for side in (0, engine.model.tokens_per_image, 1.5):
        with pytest.raises(ValueError, match="side"):
            PooledGrid(engine.model, side)
    with pytest.raises(ValueError, match="LLaVA-1.5"):
        PooledGrid(PooledGrid(engine.model, 2), 1)


@pytest.mark.parametrize("decode_step", ["dynamic", "static"])
def test_pooled_engine_equals_transformers_on_pooled_embeddings(checkpoint, decode_step):
    engine, hf = checkpoint
    pooled = PooledGrid(engine.model, 2)
    pooled_engine = Engine(pooled, decode_step=decode_step)
    ids, pixels = random_prompts(3, seed=4)
    short = [pooled.shorten(row) for row in ids]
    results = pooled_engine.generate_ids(short, pixels, max_new_tokens=8, output_logits=True)
    grid = pooled.grid
    for b, r in enumerate(results):
        with torch.no_grad():
            features = hf.model.get_image_features(pixel_values=pixels[b:b + 1])
            features = getattr(features, "pooler_output", features)[0]
            d = features.shape[-1]
            blocks = features.reshape(2, grid // 2, 2, grid // 2, d).mean((1, 3)).reshape(4, d)
            embeds = hf.get_input_embeddings()(short[b])
            embeds[short[b] == IMAGE_TOKEN] = blocks
            out = hf.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, len(short[b]),
                              dtype=torch.long), max_new_tokens=8, do_sample=False,
                              return_dict_in_generate=True, output_logits=True)
        row = out.sequences[0].tolist()
        n = row.index(2) + 1 if 2 in row else len(row)
        assert r.token_ids == row[:n]
        torch.testing.assert_close(r.logits, torch.stack([s[0] for s in out.logits[:n]]).float(),
                                   atol=1e-4, rtol=0)
        assert r.stats.n_visual == 4 and pooled.pooled_away(r.stats.n_visual) == grid * grid - 4
