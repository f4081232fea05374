import math

import pytest
import torch

from dyrate_engine import ops
from conftest import FLOAT_DTYPES, poison_allocator, random_spans, random_visual_slots

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float16: 1e-5}


def check_against_reference(q, k, lengths, vs, vl, pl, max_vis, scale=None, vis_slots=None):
    poison_allocator(q.device)
    vis, mass = ops.attention_scores(q, k, lengths, vs, vl, pl, scale, max_vis=max_vis,
                                     vis_slots=vis_slots)
    ref_vis, ref_mass = ops.attention_scores_reference(q, k, lengths, vs, vl, pl, scale, max_vis,
                                                       vis_slots)
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
    with pytest.raises(ValueError, match="lengths must be int32 or int64"):
        ops.attention_scores(q[:, :2], k, one.short(), one * 0, one * 0, one)
    with pytest.raises(ValueError, match="q needs a contiguous head dim"):
        ops.attention_scores(q[:, :2].transpose(0, 2).contiguous().transpose(0, 2), k, one,
                             one * 0, one * 0, one)
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


def oracle_spans(q, k, lengths, vis_start, vis_len, prompt_len, vis_slots, max_vis):
    """Plain Python over one head at a time: softmax over the first lengths slots, every slot
    classified by membership in the sequence's visual slots."""
    B, H, D = q.shape
    group = H // k.shape[1]
    vis = torch.zeros(B, max_vis, dtype=torch.float64)
    mass = torch.zeros(B, H, 4, dtype=torch.float64)
    for b in range(B):
        n = int(lengths[b])
        visual = [int(s) for s in vis_slots[b, :int(vis_len[b])]]
        for h in range(H):
            if n == 0:
                continue
            logits = [float(q[b, h].double() @ k[b, h // group, s].double()) / math.sqrt(D)
                      for s in range(n)]
            top = max(logits)
            p = [math.exp(x - top) for x in logits]
            p = [x / sum(p) for x in p]
            for s in range(n):
                kind = (1 if s in visual else 0 if s < int(vis_start[b])
                        else 2 if s < int(prompt_len[b]) else 3)
                mass[b, h, kind] += p[s]
            for r, s in enumerate(visual):
                vis[b, r] += p[s] / H
    return vis.float(), mass.float()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_several_visual_spans(device, dtype):
    """Images or video frames with text between them: the kernel, the reference and a plain
    Python oracle agree, and a contiguous table gives the single-span answer."""
    gen = torch.Generator().manual_seed(11 + FLOAT_DTYPES.index(dtype))
    for trial in range(6):
        B, hkv, group, cap, d = 1 + trial % 3, 1 + trial % 2, [1, 2, 4][trial % 3], 3 + 11 * trial, 16
        lengths, vs, vl, pl, slots = random_visual_slots(gen, B, cap, max_vis=cap)
        max_vis = int(vl.max())
        q = torch.randn(B, hkv * group, d, generator=gen).to(dtype)
        k = (2 * torch.randn(B, hkv, cap, d, generator=gen)).to(dtype)
        vis, mass = check_against_reference(*(t.to(device) for t in (q, k, lengths, vs, vl, pl)),
                                            max_vis, vis_slots=slots.to(device))
        o_vis, o_mass = oracle_spans(q.float(), k.float(), lengths, vs, vl, pl, slots, max_vis)
        torch.testing.assert_close(vis.cpu(), o_vis, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mass.cpu(), o_mass, atol=1e-5, rtol=1e-4)
    lengths, vs, vl, pl = (torch.tensor(v, device=device) for v in ([12], [2], [5], [9]))
    table = torch.arange(2, 7, device=device)[None]
    q, k = torch.randn(1, 2, 8, device=device), torch.randn(1, 1, 12, 8, device=device)
    single = ops.attention_scores(q, k, lengths, vs, vl, pl)
    spans = ops.attention_scores(q, k, lengths, vs, vl, pl, vis_slots=table)
    torch.testing.assert_close(spans, single)


@pytest.mark.parametrize("slots, message", [
    ([2, 4, 4], "strictly increasing"), ([3, 4, 5], "must equal vis_start"),
    ([2, 4, 9], "below prompt_len"), ([2, 1, 5], "strictly increasing"),
])
def test_bad_visual_slots_raise(device, slots, message):
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    q, k = torch.randn(1, 2, 8, device=device), torch.randn(1, 1, 12, 8, device=device)
    table = torch.tensor([slots], device=device)
    with pytest.raises(ValueError, match=message):
        ops.attention_scores(q, k, t(10), t(2), t(3), t(9), vis_slots=table)
    with pytest.raises(ValueError, match="vis_slots must be a tensor of shape"):
        ops.attention_scores(q, k, t(10), t(2), t(3), t(9), vis_slots=table[:, :2])
    if device.type == "cpu" and ops.backends()["attention_scores"]["cpu"] == "extension":
        with pytest.raises(RuntimeError, match="vis_slots|prompt_len"):
            torch.ops.dyrate.attention_scores(q, k, t(10), t(2), t(3), t(9), None, 3, table)


def test_a_visual_start_past_the_prompt_raises_without_visual_tokens(device):
    """With a slot table and no visual tokens, vis_start still ends the system run: past
    prompt_len it would overlap the response (the CPU kernel once wrote past its buffer)."""
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    q, k = torch.randn(1, 2, 8, device=device), torch.randn(1, 1, 8, 8, device=device)
    table = torch.zeros(1, 2, dtype=torch.long, device=device)
    for start in (3, 7):
        with pytest.raises(ValueError, match="vis_start must be <= prompt_len"):
            ops.attention_scores(q, k, t(5), t(start), t(0), t(2), max_vis=2, vis_slots=table)
        if device.type == "cpu" and ops.backends()["attention_scores"]["cpu"] == "extension":
            with pytest.raises(RuntimeError, match="prompt_len"):
                torch.ops.dyrate.attention_scores(q, k, t(5), t(start), t(0), t(2), None, 2,
                                                  table)


def test_opcheck_with_visual_slots(device):
    gen = torch.Generator().manual_seed(6)
    lengths, vs, vl, pl, slots = random_visual_slots(gen, 3, 20, 20)
    q, k = torch.randn(3, 4, 16, generator=gen), torch.randn(3, 2, 20, 16, generator=gen)
    args = [t.to(device) for t in (q, k, lengths, vs, vl, pl)] + [None, int(vl.max()),
                                                                  slots.to(device)]
    torch.library.opcheck(torch.ops.dyrate.attention_scores.default, tuple(args))
