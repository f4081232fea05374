"""The static decode step (fixed shapes, device state, CUDA graphs, torch.compile) against the
dynamic one, which the parity and pruning tests hold to transformers and to the masked
reference; those tests also run on the static step."""
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dyrate_engine import Dense, DyRate, Engine, FastV, RandomKeep, Schedule, ops
from dyrate_engine.engine.stats import StatsRecorder
from dyrate_engine.predictor import RatePredictor
from tiny_models import build_tiny_llava, multi_image_prompts, random_prompts

TABLE = torch.tensor([[0.0, 0.5, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0],
                      [0.25, 0.25, 0.0, 0.6, 0.6, 0.8, 0.8, 0.8],
                      [0.9, 0.1, 0.1, 0.1, 0.95, 0.95, 0.95, 0.95]])
POLICIES = {
    "dense": lambda: Dense(),
    "dense-monitored": lambda: Dense(prune_layer=2),
    "fastv": lambda: FastV(prune_layer=2, ratio=0.5),
    "schedule": lambda: Schedule([0.0, 0.5, 0.25, 0.9, 0.6, 1.0], prune_layer=2),
    "dyrate-table": lambda: DyRate(lambda stats: TABLE[:len(stats.n_visual), stats.step],
                                   prune_layer=3),
    "random": lambda: RandomKeep([0.25, 0.5, 0.5, 0.8], prune_layer=2, seed=2),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.from_pretrained(build_tiny_llava(tmp_path_factory.mktemp("static"), layers=4))


def check_same(engine, policy_factory, prompts, max_new_tokens=8, **options):
    ids, pixels = prompts
    expected = engine.generate_ids(ids, pixels, policy=policy_factory(),
                                   max_new_tokens=max_new_tokens, output_logits=True)
    static = Engine(engine.model, decode_step="static", **options)
    results = static.generate_ids(ids, pixels, policy=policy_factory(),
                                  max_new_tokens=max_new_tokens, output_logits=True)
    for r, e in zip(results, expected):
        assert r.token_ids == e.token_ids
        assert r.stats.kept_visual == e.stats.kept_visual
        assert r.stats.cache_lengths == e.stats.cache_lengths
        assert r.stats.rates == e.stats.rates
        assert r.stats.flops == e.stats.flops
        torch.testing.assert_close(torch.tensor(r.stats.type_mass), torch.tensor(e.stats.type_mass),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(r.logits, e.logits, atol=1e-4, rtol=0)
    return results


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_static_step_equals_dynamic_step(engine, name):
    results = check_same(engine, POLICIES[name], random_prompts(3, seed=11))
    if name == "schedule":  # the test exercises pruning while decoding
        assert results[0].stats.kept_visual[:4] == [16, 8, 8, 2]


@pytest.mark.skipif(not ops.TRITON_AVAILABLE, reason="needs the triton package")
@pytest.mark.parametrize("name", ["schedule", "dyrate-table"])
def test_triton_kernels_in_the_static_step(engine, name):
    """The Triton attention and the fused monitor (interpreted on the CPU), on prompts with
    several images (visual tokens in several spans), equal the dynamic step."""
    check_same(engine, POLICIES[name], multi_image_prompts([1, 3, 2], seed=8), max_new_tokens=6,
               attention="triton")


def test_compiled_static_step_has_no_graph_break_and_equals_eager(engine):
    """fullgraph=True fails on any graph break (a host read, a data-dependent shape)."""
    predictor = RatePredictor(n_heads=4, step_scale=4.0)
    torch.manual_seed(0)
    torch.nn.init.normal_(predictor.linear.weight, std=3.0)
    for make in (POLICIES["schedule"], lambda: DyRate(predictor, prune_layer=2)):
        check_same(engine, make, random_prompts(2, seed=4), max_new_tokens=6, compile="aot_eager")


@pytest.mark.skipif(os.environ.get("DYRATE_SLOW_TESTS") != "1",
                    reason="inductor compiles for about a minute; DYRATE_SLOW_TESTS=1 runs it")
def test_inductor_compiled_step_equals_eager(engine):
    check_same(engine, POLICIES["schedule"], random_prompts(2, seed=4), max_new_tokens=6,
               compile=True)


class DataDependentOps(TorchDispatchMode):
    """Counts the ops that read device data on the host (``.item()``, ``bool(t)``, nonzero)."""

    OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
           torch.ops.aten.masked_select.default}

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            self.counter["reads"] += 1
        return func(*args, **(kwargs or {}))


def host_reads_per_decode_step(engine, policy, monkeypatch):
    """Host reads of tensor data between one decode step's statistics and the next: the Tensor
    methods that copy data to the host, and the data-dependent ops."""
    counter, per_step = {"reads": 0}, []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__",
                 "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counter["reads"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    record = StatsRecorder.record

    def recording(self, elapsed_ms, *, prefill):
        if not prefill:
            per_step.append(counter["reads"])
        counter["reads"] = 0
        return record(self, elapsed_ms, prefill=prefill)
    monkeypatch.setattr(StatsRecorder, "record", recording)
    ids, pixels = random_prompts(2, seed=11)
    with DataDependentOps(counter):
        engine.generate_ids(ids, pixels, policy=policy, max_new_tokens=6, ignore_eos=True)
    return per_step


@pytest.mark.parametrize("name", ["dense", "schedule", "dyrate-table"])
def test_one_host_read_per_static_step(engine, name, monkeypatch):
    static = Engine(engine.model, decode_step="static")
    assert host_reads_per_decode_step(static, POLICIES[name](), monkeypatch) == [1] * 5
    if name != "dense":  # the counter sees the dynamic step's extra reads of the pruning counts
        dynamic = host_reads_per_decode_step(engine, POLICIES[name](), monkeypatch)
        assert len(dynamic) == 5 and min(dynamic) > 1


def test_decode_options_are_checked(engine):
    with pytest.raises(ValueError, match="decode_step must be one of"):
        Engine(engine.model, decode_step="fast")
    with pytest.raises(ValueError, match="compile=True needs the static decode step"):
        Engine(engine.model, decode_step="dynamic", compile=True)
    with pytest.raises(ValueError, match="attention must be one of"):
        Engine(engine.model, attention="flash")
    assert Engine(engine.model).options.static(torch.device("cpu")) is False
    assert Engine(engine.model).options.static(torch.device("cuda")) is True
    assert Engine(engine.model, compile=True).options.static(torch.device("cpu")) is True
