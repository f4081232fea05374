"""The op library as a whole: one schema in C++ and Python, the fallback, torch.compile."""
import os
import subprocess
import sys

import pytest
import torch

from dyrate_engine import ops
from dyrate_engine.ops._library import SCHEMAS


def test_extension_is_built_in_ci():
    if os.environ.get("CI") and not ops.EXTENSION_LOADED:
        pytest.fail("CI must test the compiled kernels, but the extension did not load")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_python_schema_matches_the_registered_one(name):
    registered = str(getattr(torch.ops.dyrate, name).default._schema)
    normalise = lambda s: s.replace("dyrate::", "").replace(" ", "")  # noqa: E731
    assert normalise(registered) == normalise(SCHEMAS[name])


def test_fallback_without_extension_warns_once_and_computes_the_same():
    code = (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import dyrate_engine.ops as ops\n"
        "    import dyrate_engine.ops.select_keep\n"
        "assert sum('C++ extension is not available' in str(x.message) for x in w) == 1, w\n"
        "assert ops.backends()['select_keep']['cpu'] == 'reference'\n"
        "s = torch.tensor([[0.3, 0.9, 0.1, 0.9]]); p = torch.ones(1, 4, dtype=torch.bool)\n"
        "print(ops.select_keep(s, p, torch.tensor([2])).tolist())\n"
    )
    env = dict(os.environ, DYRATE_NO_EXTENSION="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[False, True, False, True]]"


def test_torch_compile_traces_all_ops_through_fake_kernels():
    def prune_step(q, k, kv, lengths, vis_start, vis_len, prompt_len, present, n_keep):
        scores, mass = torch.ops.dyrate.attention_scores(q, k, lengths, vis_start, vis_len,
                                                         prompt_len, None, 6)
        keep = torch.ops.dyrate.select_keep(scores, present, n_keep)
        torch.ops.dyrate.compact_kv_(kv, lengths, vis_start, present, keep)
        return mass

    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 2, 16, 8, generator=gen)
    kv = torch.randn(2, 2, 2, 2, 16, 8, generator=gen)
    meta = lambda: [torch.tensor(v) for v in ([16, 12], [1, 2], [6, 5], [9, 9])]  # noqa: E731
    state = lambda: (kv.clone(), *meta(), torch.tensor([[1] * 6, [1] * 5 + [0]]).bool())  # noqa: E731
    n_keep = torch.tensor([3, 2])
    eager = state()
    compiled_state = state()
    expected = prune_step(q, k, eager[0], *eager[1:], n_keep)
    compiled = torch.compile(prune_step, backend="aot_eager", fullgraph=True)
    got = compiled(q, k, compiled_state[0], *compiled_state[1:], n_keep)
    torch.testing.assert_close(got, expected)
    for a, b in zip(compiled_state, eager):
        assert torch.equal(a, b)
