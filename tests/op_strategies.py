"""Hypothesis strategies and settings for the property tests of the ops.

The tests run a bounded, derandomised number of examples per property, so `make test` is fast
and repeatable; ``DYRATE_PROPERTY_EXAMPLES=N`` (``make properties``) runs N random examples per
property instead.
"""
import os

import torch
from hypothesis import HealthCheck, settings, strategies as st

_LONG = int(os.environ.get("DYRATE_PROPERTY_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=_LONG or 40, derandomize=not _LONG, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOAT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
dtypes = st.sampled_from(FLOAT_DTYPES)
index_dtypes = st.sampled_from([torch.int32, torch.int64])


def lengths_in(capacity: int):
    """A length in ``[0, capacity]`` that hits 0, 1 and the capacity often."""
    return st.one_of(st.sampled_from(sorted({0, min(1, capacity), capacity})),
                     st.integers(0, capacity))


@st.composite
def one_span_rows(draw, batch: int, capacity: int, max_vis: int):
    """Ragged ``(lengths, vis_start, vis_len, prompt_len)``, int64, the visual span placed at
    the start, at the end (it closes the prompt and the sequence) or anywhere."""
    rows = []
    for _ in range(batch):
        length = draw(lengths_in(capacity))
        vis_len = draw(st.integers(0, min(max_vis, length)))
        where = draw(st.sampled_from(["start", "end", "any"]))
        vis_start = {"start": 0, "end": length - vis_len}.get(where)
        if vis_start is None:
            vis_start = draw(st.integers(0, length - vis_len))
        prompt_len = length if where == "end" else draw(st.integers(vis_start + vis_len, length))
        rows.append((length, vis_start, vis_len, prompt_len))
    return [torch.tensor(column, dtype=torch.long) for column in zip(*rows)]


@st.composite
def several_span_rows(draw, batch: int, capacity: int, max_vis: int):
    """Ragged ``(lengths, vis_start, vis_len, prompt_len, vis_slots)``: the visual tokens are any
    ascending set of prompt slots (text between them), ``vis_slots`` padded with -1."""
    rows, tables = [], []
    for _ in range(batch):
        length = draw(lengths_in(capacity))
        prompt_len = draw(st.integers(0, length))
        slots = draw(st.lists(st.integers(0, max(prompt_len - 1, 0)), unique=True,
                              max_size=min(max_vis, prompt_len)))
        slots = sorted(slots) if prompt_len else []
        vis_start = slots[0] if slots else draw(st.integers(0, prompt_len))
        rows.append((length, vis_start, len(slots), prompt_len))
        tables.append(slots)
    table = torch.full((batch, max(max_vis, 1)), -1, dtype=torch.long)
    for b, slots in enumerate(tables):
        table[b, :len(slots)] = torch.tensor(slots, dtype=torch.long)
    return [torch.tensor(column, dtype=torch.long) for column in zip(*rows)] + [table]


def randn(gen: torch.Generator, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype)


def strided(t: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """``t`` as a view into a larger tensor (``pad`` extra entries along ``dim``), so its
    strides are not those of a contiguous tensor; the extra entries are NaN."""
    if pad == 0:
        return t
    shape = list(t.shape)
    shape[dim] += pad
    big = torch.full(shape, float("nan"), dtype=t.dtype)
    view = big.narrow(dim, 0, t.shape[dim])
    view.copy_(t)
    return view
