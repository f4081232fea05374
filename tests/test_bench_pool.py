"""`dyrate bench pool`: paired per-round ratios pooled over runs, their median, and a
95% interval for that median that really covers 95%."""
import json
import math
import statistics

import pytest

from dyrate_engine.cli import main
from dyrate_engine.bench.pool import median_interval, pooled_ratios


def _miss_probability(n, j):
    """P(the median falls outside [x_(j), x_(n-1-j)]) = 2 P(Binomial(n, 1/2) <= j)."""
    return 2 * sum(math.comb(n, i) for i in range(j + 1)) / 2**n


@pytest.mark.parametrize("n", [6, 9, 17, 29, 48, 100])
def test_median_interval_is_the_tightest_with_95_percent_coverage(n):
    values = [float(v) for v in reversed(range(n))]  # unsorted on purpose; value = rank
    low, high = median_interval(values)
    j = int(low)
    assert high == n - 1 - j
    assert _miss_probability(n, j) <= 0.05  # covers at least 95%
    assert _miss_probability(n, j + 1) > 0.05  # and the next narrower one would not


def test_median_interval_of_too_few_values_is_their_range():
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


def _run(batch_rows):
    rows = []
    for batch, per_policy in batch_rows.items():
        for policy, tok_s in per_policy.items():
            rows.append({"batch": batch, "policy": policy,
                         "metrics": {"tokens_per_s": {"values": tok_s}}})
    return {"rows": rows}


RUN_A = _run({16: {"dense": [100.0, 110.0, 90.0], "schedule:3:0.75": [130.0, 121.0, 126.0]},
              1: {"hf": [5.0, 5.0, 5.0]}})  # batch 1 has no dense row: no ratio
RUN_B = _run({16: {"dense": [100.0, 100.0], "schedule:3:0.75": [150.0, 120.0]}})


def test_pooled_ratios_pair_each_round_and_pool_all_runs():
    (row,) = pooled_ratios([RUN_A, RUN_B])
    ratios = [1.3, 1.1, 1.4, 1.5, 1.2]
    assert (row["batch"], row["policy"], row["runs"], row["rounds"]) == (16, "schedule:3:0.75", 2, 5)
    assert row["median"] == pytest.approx(statistics.median(ratios))
    assert (row["min"], row["max"]) == (pytest.approx(1.1), pytest.approx(1.5))


def test_pooled_ratios_refuse_unpaired_rounds():
    bad = _run({16: {"dense": [100.0, 100.0], "schedule:3:0.75": [150.0]}})
    with pytest.raises(ValueError, match="different round counts"):
        pooled_ratios([bad])


def test_bench_pool_cli_prints_the_pooled_row(tmp_path, capsys):
    paths = []
    for name, run in (("a", RUN_A), ("b", RUN_B)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    assert main(["bench", "pool", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "schedule:3:0.75" in out and "1.300x" in out and " 5 " in out
    assert main(["bench", "pool", str(paths[0]), "--base", "nothing"]) != 0
    assert "no policy with a 'nothing' row" in capsys.readouterr().err
