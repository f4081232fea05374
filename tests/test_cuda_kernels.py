"""CUDA-only checks of the kernels and the static step: what the CPU cannot exercise (the
attention_scores kernel's recompute path, GQA groups that are not powers of two or above 8,
head dims near the limit, compaction offsets beyond 2^31, determinism, CUDA-graph capture)."""
import pytest
import torch

from dyrate_engine import DyRate, Engine, Schedule, ops
from dyrate_engine.predictor import RatePredictor
from conftest import random_spans
from tiny_models import build_tiny_llava, random_prompts

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA device")]


def scores_case(gen, B, hkv, group, cap, d, dtype=torch.float32):
    q = torch.randn(B, hkv * group, d, generator=gen).to(dtype).cuda()
    k = torch.randn(B, hkv, cap, d, generator=gen).to(dtype).cuda()
    lengths, vs, vl, pl = (t.cuda() for t in random_spans(gen, B, cap, max_vis=cap,
                                                          allow_empty=False))
    return q, k, lengths, vs, vl, pl, int(vl.max())


@pytest.mark.parametrize("group,d,cap", [(7, 128, 300), (12, 64, 200), (8, 128, 9000),
                                         (1, 512, 64), (3, 256, 513)])
def test_attention_scores_shapes_the_cpu_never_reaches(group, d, cap):
    """(8, 128, 9000): max_vis too wide for shared memory, so the visual logits are
    recomputed; 7 and 12 query heads per key head; head dims up to 512."""
    gen = torch.Generator().manual_seed(group * d)
    q, k, lengths, vs, vl, pl, max_vis = scores_case(gen, 2, 2, group, cap, d)
    vis, mass = ops.attention_scores(q, k, lengths, vs, vl, pl, max_vis=max_vis)
    ref_vis, ref_mass = ops.attention_scores_reference(q, k, lengths, vs, vl, pl, None, max_vis)
    torch.testing.assert_close(vis, ref_vis, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(mass, ref_mass, atol=1e-5, rtol=1e-4)


def test_attention_scores_are_deterministic_and_keep_exact_ties():
    gen = torch.Generator().manual_seed(0)
    q, k, lengths, vs, vl, pl, max_vis = scores_case(gen, 3, 4, 4, 400, 64)
    k[:, :, 1::2] = k[:, :, 0:-1:2]  # every odd slot is the slot before it: exact ties
    first = ops.attention_scores(q, k, lengths, vs, vl, pl, max_vis=max_vis)[0]
    for _ in range(5):
        assert torch.equal(ops.attention_scores(q, k, lengths, vs, vl, pl, max_vis=max_vis)[0],
                           first)


def test_a_nan_head_is_nan_as_in_the_reference():
    gen = torch.Generator().manual_seed(1)
    q, k, lengths, vs, vl, pl, max_vis = scores_case(gen, 2, 1, 2, 50, 32)
    q[0, 1, 3] = float("nan")
    vis, mass = ops.attention_scores(q, k, lengths, vs, vl, pl, max_vis=max_vis, validate=False)
    ref_vis, ref_mass = ops.attention_scores_reference(q, k, lengths, vs, vl, pl, None, max_vis)
    assert torch.equal(torch.isnan(mass), torch.isnan(ref_mass)) and torch.isnan(mass[0, 1]).all()
    real = torch.arange(max_vis, device="cuda") < vl[0]
    assert torch.isnan(vis[0][real]).all() and torch.isnan(ref_vis[0][real]).all()
    assert not torch.isnan(vis[1]).any()


def test_compaction_beyond_two_to_the_31_elements():
    """A cache of more than 2^31 elements: 64-bit offsets in compact_kv_."""
    if torch.cuda.get_device_properties(0).total_memory < 24 << 30:
        pytest.skip("needs 24 GB")
    L, B, hkv, cap, d = 2, 2, 8, 70000, 128  # 2^31.1 fp32 elements (8.6 GB)
    kv = torch.zeros(L, 2, B, hkv, cap, d, device="cuda")
    kv[-1, -1, -1, -1, :, 0] = torch.arange(cap, device="cuda", dtype=torch.float32)
    lengths = torch.tensor([cap, cap], device="cuda")
    vis_start = torch.tensor([10, cap - 100], device="cuda")
    present = torch.ones(B, 50, dtype=torch.bool, device="cuda")
    keep = present.clone()
    keep[1, ::2] = False
    ops.compact_kv_(kv, lengths, vis_start, present, keep)
    assert lengths.tolist() == [cap, cap - 25]
    moved = kv[-1, -1, -1, -1, cap - 100:cap - 25, 0]
    expected = torch.cat([torch.arange(cap - 99, cap - 50, 2), torch.arange(cap - 50, cap)])
    assert torch.equal(moved, expected.float().cuda())


def test_static_step_on_cuda_with_graphs_equals_the_cpu(tmp_path):
    path = build_tiny_llava(tmp_path, layers=4)
    cpu = Engine.from_pretrained(path)
    cuda = Engine.from_pretrained(path, device="cuda")
    assert cuda.options.static(cuda.device) and cuda.options.cuda_graphs
    ids, pixels = random_prompts(3, seed=11)
    policy = lambda: Schedule([0.0, 0.5, 0.25, 0.9, 0.6, 1.0], prune_layer=2)  # noqa: E731
    expected = cpu.generate_ids(ids, pixels, policy=policy(), max_new_tokens=8)
    results = cuda.generate_ids(ids, pixels.cuda(), policy=policy(), max_new_tokens=8)
    for r, e in zip(results, expected):
        assert r.token_ids == e.token_ids and r.stats.kept_visual == e.stats.kept_visual


def test_a_predictor_on_the_cpu_runs_in_the_cuda_graph(tmp_path):
    """DyRate.from_pretrained loads its predictor on the CPU; the engine moves it to the GPU,
    since the captured step may read nothing from the host."""
    path = build_tiny_llava(tmp_path, layers=4)
    torch.manual_seed(0)
    predictor = RatePredictor(n_heads=4, step_scale=4.0)
    torch.nn.init.normal_(predictor.linear.weight, std=3.0)
    ids, pixels = random_prompts(2, seed=4)
    expected = Engine.from_pretrained(path).generate_ids(
        ids, pixels, policy=DyRate(predictor, prune_layer=2), max_new_tokens=8)
    predictor.cpu()
    results = Engine.from_pretrained(path, device="cuda").generate_ids(
        ids, pixels.cuda(), policy=DyRate(predictor, prune_layer=2), max_new_tokens=8)
    for r, e in zip(results, expected):
        assert r.token_ids == e.token_ids and r.stats.kept_visual == e.stats.kept_visual
