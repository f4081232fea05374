import math

import pytest
import torch

from dyrate_engine import ops
from conftest import FLOAT_DTYPES, poison_allocator, random_spans

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float16: 1e-5}


def check_against_reference(q, k, lengths, vs, vl, pl, max_vis, scale=None):
    poison_allocator(q.device)
    vis, mass = ops.attention_scores(q, k, lengths, vs, vl, pl, scale, max_vis=max_vis)
    ref_vis, ref_mass = ops.attention_scores_reference(q, k, lengths, vs, vl, pl, scale, max_vis)
    assert vis.dtype == mass.dtype == torch.float32
    assert vis.shape == (q.shape[0], max_vis) and mass.shape == (q.shape[0], q.shape[1], 4)
    # Inputs are exact in every dtype and both sides accumulate in fp32: only the order differs.
    torch.testing.assert_close(vis, ref_vis, atol=TOL[k.dtype], rtol=1e-4)
    torch.testing.assert_close(mass, ref_mass, atol=TOL[k.dtype], rtol=1e-4)
    nonempty = lengths.to(q.device) > 0
    sums = mass.sum(-1)
    torch.testing.assert_close(sums[nonempty], torch.ones_like(sums[nonempty]))
    assert (mass[~nonempty] == 0).all()
    span = torch.arange(max_vis, device=q.device) < vl.to(q.device)[:, None]
    assert (vis[~span] == 0).all(), "scores past vis_len must be exactly 0"
    return vis, mass


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("group", [1, 4, 8])
def test_random_ragged_batches(device, dtype, group):
    gen = torch.Generator().manual_seed(group * 7 + FLOAT_DTYPES.index(dtype))
    for trial in range(6):
        B, hkv, cap, d = 1 + trial % 4, 1 + trial % 3, 1 + 13 * trial, [8, 64, 72, 128, 4, 96][trial]
        lengths, vs, vl, pl = random_spans(gen, B, cap, max_vis=cap)
        max_vis = int(vl.max()) + trial % 2  # sometimes wider than needed: padded with zeros
        q = torch.randn(B, hkv * group, d, generator=gen).to(dtype)
        k = (3 * torch.randn(B, hkv, cap, d, generator=gen)).to(dtype)
        to = lambda t: t.to(device)  # noqa: E731
        check_against_reference(to(q), to(k), to(lengths), to(vs), to(vl), to(pl), max_vis)


def test_strided_cache_view_and_scale(device):
    """The monitor layer reads k straight out of the [L, 2, B, Hkv, Cap, D] cache (a view)."""
    gen = torch.Generator().manual_seed(1)
    kv = torch.randn(3, 2, 2, 4, 50, 64, generator=gen).to(device)
    k = kv[1, 0]
    q = torch.randn(2, 16, 64, generator=gen).to(device)[:, :, :]
    lengths, vs, vl, pl = (torch.tensor(v, device=device) for v in ([50, 31], [5, 0], [40, 30], [47, 30]))
    check_against_reference(q, k, lengths, vs, vl, pl, 40, scale=0.3)
    # q with a non-contiguous batch/head layout
    q_t = torch.randn(16, 2, 64, generator=gen).to(device).transpose(0, 1)
    check_against_reference(q_t, k, lengths, vs, vl, pl, 40)


def test_edge_cases(device):
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(5, 4, 32, generator=gen).to(device)
    k = torch.randn(5, 2, 9, 32, generator=gen).to(device)
    # empty row, no visual tokens, one visual token, lengths at capacity, only visual tokens
    lengths, vs, vl, pl = t(0, 6, 9, 9, 9), t(0, 3, 8, 0, 0), t(0, 0, 1, 4, 9), t(0, 3, 9, 4, 9)
    vis, mass = check_against_reference(q, k, lengths, vs, vl, pl, 9)
    assert (vis[0] == 0).all() and (vis[1] == 0).all()
    assert mass[1, :, 1].abs().max() == 0  # no image tokens, no image mass
    torch.testing.assert_close(mass[4, :, 1], torch.ones(4, device=device))
    # identical keys: uniform attention over lengths slots
    k_same = torch.ones(5, 2, 9, 32, device=device)
    vis, mass = check_against_reference(q, k_same, lengths, vs, vl, pl, 9)
    torch.testing.assert_close(vis[4], torch.full((9,), 1 / 9, device=device))
    torch.testing.assert_close(mass[2, :, 3], torch.full((4,), 0.0, device=device))


def test_large_logits_do_not_overflow(device):
    q = torch.full((1, 2, 16), 30.0, device=device)
    k = torch.randn(1, 1, 20, 16, generator=torch.Generator().manual_seed(3)).to(device) * 30
    lengths, vs, vl, pl = (torch.tensor([v], device=device) for v in (20, 2, 10, 15))
    vis, mass = check_against_reference(q, k, lengths, vs, vl, pl, 10, scale=1.0)
    assert torch.isfinite(vis).all() and torch.isfinite(mass).all()


def test_matches_softmax_of_dense_attention(device):
    """An independent oracle: plain softmax attention of one head, summed by hand."""
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 1, 8, generator=gen), torch.randn(1, 1, 12, 8, generator=gen)
    p = torch.softmax((k[0, 0, :10] @ q[0, 0]) / math.sqrt(8), 0)
    args = [torch.tensor([v]) for v in (10, 2, 5, 8)]
    vis, mass = ops.attention_scores(q.to(device), k.to(device), *(a.to(device) for a in args))
    expected_mass = torch.stack([p[:2].sum(), p[2:7].sum(), p[7:8].sum(), p[8:10].sum()])
    torch.testing.assert_close(mass[0, 0].cpu(), expected_mass)
    torch.testing.assert_close(vis[0].cpu(), p[2:7])


@pytest.mark.parametrize("bad, message", [
    (dict(lengths=[13]), "capacity"),
    (dict(prompt_len=[11], lengths=[10]), "prompt_len must be <= lengths"),
    (dict(vis_start=[-1]), "vis_start must be >= 0"),
    (dict(vis_len=[9]), "vis_start \\+ vis_len must be <= prompt_len"),
])
def test_bad_values_raise(device, bad, message):
    args = dict(lengths=[10], vis_start=[2], vis_len=[4], prompt_len=[8])
    args.update(bad)
    a = {n: torch.tensor(v, device=device) for n, v in args.items()}
    q, k = torch.randn(1, 2, 8, device=device), torch.randn(1, 1, 12, 8, device=device)
    with pytest.raises(ValueError, match=message):
        ops.attention_scores(q, k, a["lengths"], a["vis_start"], a["vis_len"], a["prompt_len"])


def test_bad_metadata_raises(device):
    q, k = torch.randn(1, 3, 8, device=device), torch.randn(1, 2, 12, 8, device=device)
    one = torch.tensor([4], device=device)
    with pytest.raises(ValueError, match="multiple of key heads"):
        ops.attention_scores(q, k, one, one * 0, one * 0, one)
    with pytest.raises(ValueError, match="int64"):
        ops.attention_scores(q[:, :2], k, one.int(), one * 0, one * 0, one)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        ops.attention_scores(q[:, :2].double(), k, one, one * 0, one * 0, one)


def test_cpu_kernel_checks_values_without_the_wrapper():
    """C++ callers skip the Python checks; the CPU kernel still refuses out-of-range indices."""
    if ops.backends()["attention_scores"]["cpu"] != "extension":
        pytest.skip("extension not built")
    q, k = torch.randn(1, 2, 8), torch.randn(1, 1, 12, 8)
    with pytest.raises(RuntimeError, match="capacity"):
        torch.ops.dyrate.attention_scores(q, k, torch.tensor([13]), torch.tensor([0]),
                                          torch.tensor([2]), torch.tensor([4]), None, 2)


def test_opcheck(device):
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, 8, 16, generator=gen), torch.randn(2, 2, 20, 16, generator=gen)
    lengths, vs, vl, pl = random_spans(gen, 2, 20, 20, allow_empty=False)
    args = [t.to(device) for t in (q, k, lengths, vs, vl, pl)] + [None, int(vl.max())]
    torch.library.opcheck(torch.ops.dyrate.attention_scores.default, tuple(args))
