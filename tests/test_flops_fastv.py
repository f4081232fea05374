from dyrate_engine.bench import fastv_flops


def test_engine_flops_agree_with_fastv_formula_at_llava_7b_shape():
    exact, published = fastv_flops.main(["--prune-layer", "2", "--ratio", "0.5"])
    assert 0.3 < exact < 0.5
    assert abs(exact - published) < 0.03
