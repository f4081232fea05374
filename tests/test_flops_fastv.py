import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_bench"))
import fastv_flops  # noqa: E402


def test_engine_flops_agree_with_fastv_formula_at_llava_7b_shape():
    exact, published = fastv_flops.main(["--layer", "2", "--ratio", "0.5"])
    assert 0.3 < exact < 0.5
    assert abs(exact - published) < 0.03
