def test_the_wilson_interval_holds_at_the_edges() -> None:
    from driftrec.plots import wilson

    lo, hi = wilson(0, 30)
    assert lo == 0.0 and 0.10 < hi < 0.12  # 0 of 30 still leaves up to ~11 %
    lo, hi = wilson(30, 30)
    assert hi == 1.0 and 0.88 < lo < 0.90
    lo, hi = wilson(60, 120)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
    assert wilson(0, 0) == (0.0, 0.0)
