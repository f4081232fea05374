import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors; the variable must be
# set before a kernel is defined (the kernel modules are imported on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device")]),
]
FLOAT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def poison_allocator(device, nbytes=1 << 20):
    """Leave NaN-filled blocks in the allocator so an op that relies on zeroed fresh memory, or
    leaves an output element unwritten, shows NaN instead of passing by luck."""
    blocks = [torch.full((nbytes // 4,), float("nan"), device=device) for _ in range(4)]
    del blocks


def random_spans(gen, batch, capacity, max_vis, allow_empty=True):
    """Ragged (lengths, vis_start, vis_len, prompt_len) with every invariant of the ops."""
    rows = []
    for _ in range(batch):
        length = int(torch.randint(0 if allow_empty else 1, capacity + 1, (), generator=gen))
        vis_len = int(torch.randint(0, min(max_vis, length) + 1, (), generator=gen))
        vis_start = int(torch.randint(0, length - vis_len + 1, (), generator=gen))
        prompt_len = int(torch.randint(vis_start + vis_len, length + 1, (), generator=gen))
        rows.append((length, vis_start, vis_len, prompt_len))
    return [torch.tensor(col, dtype=torch.long) for col in zip(*rows)]


def random_visual_slots(gen, batch, capacity, max_vis):
    """Ragged (lengths, vis_start, vis_len, prompt_len, vis_slots) whose visual tokens are any
    ascending set of prompt slots (several spans, text between them); vis_slots is padded with
    -1 past each vis_len, which the ops must not read."""
    rows, tables = [], []
    for _ in range(batch):
        length = int(torch.randint(1, capacity + 1, (), generator=gen))
        prompt_len = int(torch.randint(1, length + 1, (), generator=gen))
        visual = (torch.rand(prompt_len, generator=gen) < 0.6).nonzero()[:, 0][:max_vis]
        vis_start = int(visual[0]) if len(visual) else int(torch.randint(0, prompt_len + 1, (),
                                                                        generator=gen))
        rows.append((length, vis_start, len(visual), prompt_len))
        tables.append(visual)
    slots = torch.full((batch, max(max_vis, 1)), -1, dtype=torch.long)
    for b, visual in enumerate(tables):
        slots[b, :len(visual)] = visual
    return [torch.tensor(col, dtype=torch.long) for col in zip(*rows)] + [slots]


class RecordOps(TorchDispatchMode):
    """Records the name of every op dispatched while it is active (``names``, in order)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))
