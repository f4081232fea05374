"""`dyrate bench e2e | ops | compare` at toy sizes: the JSON has every metric with sane values,
and compare tells agreeing runs from disagreeing ones. No timing assertions."""
import copy
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dyrate_engine.cli import main
from dyrate_engine.bench.compare import _overlap
from dyrate_engine.bench.presets import PRESETS
from dyrate_engine.ops.packed_linear import MKL_PACKING
from dyrate_engine.ops.prefill_linear import ONEDNN_PACKING

POLICIES = ["hf", "dense", "fastv:2:0.5", "schedule:3:0.75", "ramp:3:0.5:0.9", "dyrate",
            "schedule:3:0.75@static"]
TIMED = ["prefill_ms", "step_ms", "tokens_per_s", "e2e_tokens_per_s", "wall_ms", "peak_mem_mb",
         "of_floor"]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "e2e", "--preset", "tiny", "--batch", "1,2", "--new-tokens", "4",
                   "--repeats", "2", "--threads", "1", "--no-progress", "--out", str(out),
                   "--policies", *POLICIES])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    path = out / "e2e_tiny.json"
    return path, json.loads(path.read_text())


def rows_by(result):
    return {(r["batch"], r["policy"]): r for r in result["rows"]}


def test_e2e_json_has_every_metric_with_sane_values(e2e):
    _, result = e2e
    assert result["machine"]["torch"] and result["machine"]["date"]
    assert result["copy_bandwidth_gbs"] > 0
    rows = rows_by(result)
    assert set(rows) == {(b, p) for b in (1, 2) for p in POLICIES}
    for r in result["rows"]:
        for name in TIMED:
            m = r["metrics"][name]
            assert len(m["values"]) == 2
            assert 0 < m["min"] <= m["median"] <= m["max"], (r["label"], name, m)
        assert 0 < r["metrics"]["of_floor"]["median"] < 10
        assert len(r["step_ms_by_step"]) == len(r["floor_ms_by_step"]) == 3  # N - 1 steps
        assert 0 < r["kv_final_bytes"] <= r["kv_allocated_bytes"]
        assert r["weights_bytes"] > 0


def test_e2e_measures_bandwidth_each_round_and_pairs_ratios_by_round(e2e):
    _, result = e2e
    bandwidth = result["copy_bandwidth_measures_gbs"]
    assert len(bandwidth) == 1 + 2 * 2  # one before the run, one per timed round and batch
    assert min(bandwidth) <= result["copy_bandwidth_gbs"] <= max(bandwidth)
    rows = rows_by(result)
    for b in (1, 2):
        dense, hf = rows[(b, "dense")], rows[(b, "hf")]
        for r in (rows[(b, p)] for p in POLICIES if p not in ("dense", "hf")):
            for base, ref in (("dense", dense), ("hf", hf)):
                per_round = [x / y for x, y in zip(r["metrics"]["tokens_per_s"]["values"],
                                                   ref["metrics"]["tokens_per_s"]["values"])]
                assert r[f"vs_{base}"]["values"] == pytest.approx(per_round)
                assert r[f"vs_{base}"]["min"] == pytest.approx(min(per_round))


def test_e2e_timed_rounds_go_round_the_batches(e2e):
    _, result = e2e
    assert result["round_order"] == [[0, 1], [0, 2], [1, 1], [1, 2]]


def test_agreement_is_overlap_of_the_ranges():
    def m(lo, hi):
        return {"median": (lo + hi) / 2, "min": lo, "max": hi}
    assert _overlap(m(49.0, 51.0), m(50.5, 53.0), 0.0)
    assert not _overlap(m(49.0, 51.0), m(51.5, 53.0), 0.0)
    assert _overlap(m(49.0, 51.0), m(51.5, 53.0), 0.01)  # 1% of 51 and of 51.5 bridges 0.5


def test_e2e_pruning_shows_in_flops_kv_and_kept_tokens(e2e):
    _, result = e2e
    rows, nv = rows_by(result), result["n_visual"]
    for b in (1, 2):
        dense, sched = rows[(b, "dense")], rows[(b, "schedule:3:0.75")]
        ramp, fastv = rows[(b, "ramp:3:0.5:0.9")], rows[(b, "fastv:2:0.5")]
        assert rows[(b, "hf")]["flops_vs_dense"] == dense["flops_vs_dense"] == 1.0
        assert sched["flops_vs_dense"] < 1.0 and fastv["flops_vs_dense"] < 1.0
        assert set(dense["kept_visual_by_step"]) == {nv}
        assert set(sched["kept_visual_by_step"]) == {math.ceil(0.25 * nv)}
        kept = ramp["kept_visual_by_step"]
        assert all(a >= b for a, b in zip(kept, kept[1:])) and kept[-1] < kept[1] < nv
        assert sched["kv_final_bytes"] < dense["kv_final_bytes"]
        assert sched["kv_allocated_bytes"] == dense["kv_allocated_bytes"]
        assert sched["kv_read_bytes_by_step"][0] < dense["kv_read_bytes_by_step"][0]
        assert {"vs_dense", "vs_hf"} <= set(sched)
    assert rows[(2, "dyrate")]["label"] == "dyrate(untrained)"
    assert "cost" in rows[(2, "dyrate")]["note"]


def test_e2e_runs_the_static_step_as_its_own_contender(e2e):
    rows = rows_by(e2e[1])
    for b in (1, 2):
        static, dynamic = rows[(b, "schedule:3:0.75@static")], rows[(b, "schedule:3:0.75")]
        assert static["label"] == "schedule:3:0.75@static"
        for key in ("kept_visual_by_step", "flops_vs_dense", "kv_read_bytes_by_step"):
            assert static[key] == dynamic[key]


def test_e2e_writes_plots(e2e):
    pytest.importorskip("matplotlib")
    path, _ = e2e
    for suffix in ("tokens_per_s", "steps"):
        assert (path.parent / f"e2e_tiny_{suffix}.png").stat().st_size > 1000


def test_compare_agrees_with_itself_and_flags_a_doctored_run(e2e, tmp_path, capsys):
    path, result = e2e
    assert main(["bench", "compare", str(path), str(path)]) == 0
    assert "AGREE" in capsys.readouterr().out

    slow = copy.deepcopy(result)
    m = slow["rows"][1]["metrics"]["step_ms"]
    for key in ("median", "min", "max"):
        m[key] *= 0.1
    m["values"] = [v * 0.1 for v in m["values"]]
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    assert main(["bench", "compare", str(path), str(tmp_path / "slow.json")]) == 1
    out = capsys.readouterr().out
    assert "DISAGREE" in out and "\n       step_ms" in out
    # A widened tolerance accepts it; a changed exact count never is.
    assert main(["bench", "compare", str(path), str(tmp_path / "slow.json"),
                 "--tolerance", "10"]) == 0
    other = copy.deepcopy(result)
    other["rows"][0]["flops_vs_dense"] = 0.5
    (tmp_path / "flops.json").write_text(json.dumps(other))
    assert main(["bench", "compare", str(path), str(tmp_path / "flops.json"),
                 "--tolerance", "10"]) == 1


def test_ops_at_tiny_sizes(tmp_path):
    path = tmp_path / "ops.json"
    assert main(["bench", "ops", "--device", "cpu", "--shape", "tiny", "--batch", "1,2",
                 "--dtype", "float32", "--warmup", "1", "--repeats", "2", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["shape_name"] == "tiny" and result["machine"]["cpu"]
    matrices = ("decode_linear", "packed_linear") if MKL_PACKING else ("decode_linear",)
    assert sorted((r["op"], r["batch"]) for r in result["rows"]) == sorted(
        [(op, b) for op in ("attention_scores", "select_keep", "compact_kv_", "decode_attention")
         for b in (1, 2)]
        + [(op, b) for op in matrices for b in (1, 2) for _ in ("gate/up", "down")]
        + [(op, b) for op in ("add_rms_norm", "silu_mul", "rope", "causal_attention")
           for b in (1, 2)]
        # a prefill's linears from more rows than a decode step's: 2 x 50 prompt tokens
        + [("prefill_linear", 2)] * (2 * ONEDNN_PACKING))
    for r in result["rows"]:
        assert r["ms"] > 0 and r["reference_ms"] > 0 and r["speedup"] > 0
        assert (r["gflops"] > 0) == (r["op"] in ("causal_attention", "prefill_linear"))
    assert result["matmul_gflops"] > 0


def test_gpu_preset_refuses_the_cpu_and_bad_specs_fail_early(capsys):
    if not torch.cuda.is_available():
        assert main(["bench", "e2e", "--preset", "llava-1.5-7b"]) == 2
        assert "CUDA" in capsys.readouterr().err
    assert main(["bench", "e2e", "--preset", "llava-1.5-7b", "--device", "cpu"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["bench", "e2e", "--preset", "tiny", "--new-tokens", "1"]) == 2
    for bad in ("hf@static", "dense@fast"):
        assert main(["bench", "e2e", "--preset", "tiny", "--policies", bad]) == 2
        assert "the suffix must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "e2e", "--batch", "0,x"])


def test_library_modules_import():
    for name in ("contenders", "e2e", "ops", "presets", "report", "compare", "runners", "timing"):
        importlib.import_module(f"dyrate_engine.bench.{name}")


SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "python_bench").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_run_from_outside_the_checkout(script, tmp_path):
    """The scripts import the installed package, with no sys.path edits: --help works from
    any directory."""
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


@pytest.mark.parametrize("preset, counts", [("qwen-tiny", (16, 64)),
                                             ("onevision-tiny", (36, 172))])
def test_e2e_sweeps_visual_tokens_on_other_families(preset, counts, tmp_path):
    """The Qwen2.5-VL path (M-RoPE, patch grids) and the OneVision path (AnyRes tiles and
    newlines): one JSON per visual-token count, each with the prompts it asked for (the engine
    checks them against the tower's features), and pruning's KV saving growing with the count."""
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "e2e", "--preset", preset, "--visual-tokens", ",".join(map(str, counts)),
                   "--batch", "1,2", "--new-tokens", "3", "--repeats", "1", "--threads", "1",
                   "--no-progress", "--no-plots", "--out", str(tmp_path),
                   "--policies", "hf", "dense", "schedule:2:0.75"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    saved = {}
    for n in counts:
        result = json.loads((tmp_path / f"e2e_{preset}@{n}.json").read_text())
        assert result["n_visual"] == n
        assert result["shape"].startswith(PRESETS[preset].family)
        rows = rows_by(result)
        dense, pruned = rows[(2, "dense")], rows[(2, "schedule:2:0.75")]
        assert pruned["kept_visual_by_step"][-1] == math.ceil(n / 4)
        saved[n] = dense["kv_final_bytes"] - pruned["kv_final_bytes"]
        assert saved[n] > 0
    assert saved[counts[1]] > 3 * saved[counts[0]]


def test_with_visual_tokens_rescales_every_family():
    from dyrate_engine.bench.presets import with_visual_tokens

    assert with_visual_tokens(PRESETS["qwen2.5-vl-cpu"], 400).n_visual == 400
    assert with_visual_tokens(PRESETS["cpu"], 100).n_visual == 100
    assert with_visual_tokens(PRESETS["qwen-tiny"], 30).name == "qwen-tiny@25"
    assert [with_visual_tokens(PRESETS["llava-onevision-7b"], n).tiles for n in (1500, 3700, 8000)] \
        == [1, 2, 3]
    assert PRESETS["llava-onevision-7b"].n_visual == 729 + 2 * 27 * 55


def test_prepack_modes_of_the_e2e_bench(e2e):
    from types import SimpleNamespace

    from dyrate_engine.bench.e2e import _prepack_option
    from dyrate_engine.ops.packed_linear import MKL_PACKING
    _, result = e2e
    assert result["prepack"] == "load" and result["packed_weights_bytes"] == 0  # batches < 8
    assert (result["prefill_packed_bytes"] > 0) == ONEDNN_PACKING  # fp32 on the CPU: packed
    cpu32 = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    cpu16 = SimpleNamespace(device=torch.device("cpu"), dtype=torch.bfloat16)
    assert _prepack_option("off", [1, 8], cpu32) is False
    assert _prepack_option("auto", [1, 8], cpu32) == "auto"
    assert _prepack_option("load", [1, 2], cpu32) == "auto"  # nothing large enough to pack
    assert _prepack_option("load", [1, 8, 16], cpu16) == "auto"
    assert _prepack_option("load", [16, 1, 8], cpu32) == ((16, 8) if MKL_PACKING else "auto")


def test_save_preset_writes_a_checkpoint_the_engine_serves(tmp_path):
    from PIL import Image

    from dyrate_engine import Engine
    from dyrate_engine.bench.presets import PRESETS
    out = tmp_path / "tiny"
    assert main(["bench", "save-preset", "--preset", "tiny", "--out", str(out)]) == 0
    engine = Engine.from_pretrained(str(out))
    result, = engine.generate(Image.new("RGB", (80, 60), "red"), "w5 w6 w7", max_new_tokens=3,
                              ignore_eos=True)
    assert len(result.token_ids) == 3 and result.text is not None
    assert result.stats.n_visual == PRESETS["tiny"].n_visual
    assert main(["bench", "save-preset", "--preset", "qwen-tiny", "--out", str(out)]) == 2


def test_bench_serve_output_lengths_are_seeded_and_spread_as_asked():
    from dyrate_engine.bench.serve import output_lengths

    uniform = output_lengths("16:512", 400, 0)
    skewed = output_lengths("16:512", 400, 0, "log-uniform")
    assert skewed == output_lengths("16:512", 400, 0, "log-uniform") \
        != output_lengths("16:512", 400, 1, "log-uniform")
    assert all(16 <= n <= 512 for n in uniform + skewed) and min(skewed) < 20 < 450 < max(skewed)
    # log-uniform: the median near the geometric mean (~91), far below the uniform one (~264)
    assert sorted(skewed)[200] < 130 < 200 < sorted(uniform)[200]
    with pytest.raises(ValueError, match="MIN:MAX"):
        output_lengths("0:4", 3, 0, "log-uniform")
