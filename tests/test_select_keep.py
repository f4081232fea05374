import pytest
import torch
from hypothesis import given, settings, strategies as st

from dyrate_engine import ops
from conftest import FLOAT_DTYPES, poison_allocator


def oracle(scores, present, n_keep):
    """Plain Python: sort the present indices by (score descending, index ascending)."""
    keep = torch.zeros_like(present)
    for b in range(scores.shape[0]):
        ranked = sorted((i for i in range(scores.shape[1]) if present[b, i]),
                        key=lambda i: (-float(scores[b, i]), i))
        keep[b, ranked[: int(n_keep[b])]] = True
    return keep


def check(scores, present, n_keep, device):
    poison_allocator(device)
    keep = ops.select_keep(scores.to(device), present.to(device), n_keep.to(device)).cpu()
    expected = oracle(scores, present, n_keep)
    assert torch.equal(keep, expected)
    assert torch.equal(ops.select_keep_reference(scores, present, n_keep), expected)
    assert torch.equal(keep.sum(1), n_keep) and not (keep & ~present).any()


# Few distinct values, so ties are common; infinities are ordinary values.
score_values = st.sampled_from([-float("inf"), -1.0, -0.0, 0.0, 0.25, 0.5, 3.0, float("inf")])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batch=st.integers(1, 4), nv=st.integers(1, 40))
def test_matches_oracle_with_ties(data, batch, nv):
    scores = torch.tensor(data.draw(st.lists(score_values, min_size=batch * nv,
                                             max_size=batch * nv))).view(batch, nv)
    present = torch.tensor(data.draw(st.lists(st.booleans(), min_size=batch * nv,
                                              max_size=batch * nv))).view(batch, nv)
    n_keep = torch.tensor([data.draw(st.integers(0, int(p))) for p in present.sum(1)])
    check(scores, present, n_keep, "cpu")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_random_ragged(device, dtype):
    gen = torch.Generator().manual_seed(0)
    for nv in (1, 7, 64, 576, 2000):
        scores = torch.rand(5, nv, generator=gen).to(dtype).float()  # exact in every dtype
        present = torch.rand(5, nv, generator=gen) < 0.8
        present[0] = False  # a row with nothing present
        present[1] = True
        frac = torch.tensor([0.0, 1.0, 0.5, 0.3, 0.9])
        n_keep = (present.sum(1) * frac).long()
        keep = ops.select_keep(scores.to(dtype).to(device), present.to(device), n_keep.to(device))
        assert torch.equal(keep.cpu(), oracle(scores, present, n_keep))


def test_edge_cases(device):
    nv = 10
    tied = torch.full((3, nv), 0.5)
    present = torch.ones(3, nv, dtype=torch.bool)
    present[2, :4] = False
    check(tied, present, torch.tensor([0, nv, 3]), device)  # k = 0, k = all, ties -> lowest index
    check(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), torch.tensor([1]), device)
    check(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), torch.tensor([0, 0]), device)


def test_nan_is_an_error_only_for_present_tokens(device):
    scores = torch.tensor([[0.1, float("nan"), 0.3]], device=device)
    present = torch.tensor([[True, True, True]], device=device)
    with pytest.raises(ValueError, match="NaN"):
        ops.select_keep(scores, present, torch.tensor([1], device=device))
    present[0, 1] = False
    keep = ops.select_keep(scores, present, torch.tensor([1], device=device))
    assert keep.cpu().tolist() == [[False, False, True]]


@pytest.mark.parametrize("n_keep", [-1, 3])
def test_n_keep_out_of_range(device, n_keep):
    present = torch.tensor([[True, False, True]], device=device)
    with pytest.raises(ValueError, match="n_keep"):
        ops.select_keep(torch.rand(1, 3, device=device), present,
                        torch.tensor([n_keep], device=device))


def test_bad_metadata(device):
    with pytest.raises(ValueError, match="present must be bool"):
        ops.select_keep(torch.rand(2, 3, device=device), torch.ones(2, 3, device=device),
                        torch.tensor([1, 1], device=device))
    with pytest.raises(ValueError, match="n_keep must be a tensor of shape"):
        ops.select_keep(torch.rand(2, 3, device=device),
                        torch.ones(2, 3, dtype=torch.bool, device=device),
                        torch.tensor([1], device=device))


def test_nan_ranks_below_every_number_without_validation(device):
    """One rule on every device and in the reference: a NaN token is dropped first (after
    -inf), NaN among themselves by index."""
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[nan, -inf, 0.5, nan, 2.0, -1.0],
                           [nan, nan, nan, 1.0, nan, -inf]], device=device)
    present = torch.ones(2, 6, dtype=torch.bool, device=device)
    present[1, 2] = False
    for k0, k1 in ((2, 1), (4, 2), (5, 3), (6, 4)):
        n_keep = torch.tensor([k0, k1], device=device)
        keep = ops.select_keep(scores, present, n_keep, validate=False)
        ref = ops.select_keep_reference(scores.cpu(), present.cpu(), n_keep.cpu())
        assert keep.cpu().tolist() == ref.tolist()
        order0, order1 = [4, 2, 5, 1, 0, 3], [3, 5, 0, 1, 4]
        assert sorted(ref[0].nonzero()[:, 0].tolist()) == sorted(order0[:k0])
        assert sorted(ref[1].nonzero()[:, 0].tolist()) == sorted(order1[:k1])


def test_fake_kernel_is_contiguous_like_the_kernels(device):
    """opcheck with a non-contiguous ``present``: the fake kernel must not copy its strides."""
    present = torch.ones(30, 3, dtype=torch.bool, device=device).t()
    scores = torch.rand(3, 30, device=device)
    torch.library.opcheck(torch.ops.dyrate.select_keep.default,
                          (scores, present, torch.tensor([4, 0, 30], device=device)))


def test_cpu_kernel_checks_values_without_the_wrapper():
    if ops.backends()["select_keep"]["cpu"] != "extension":
        pytest.skip("extension not built")
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.dyrate.select_keep(torch.rand(1, 2), torch.ones(1, 2, dtype=torch.bool),
                                     torch.tensor([3]))


def test_opcheck(device):
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 30, generator=gen).to(device)
    present = (torch.rand(3, 30, generator=gen) < 0.7).to(device)
    n_keep = (present.sum(1) // 2).to(device)
    torch.library.opcheck(torch.ops.dyrate.select_keep.default, (scores, present, n_keep))
