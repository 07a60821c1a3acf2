import numpy as np
import pandas as pd
import pytest

from overopt.fit import fit_curve, predict
from overopt.scaling import bon_n_for_kl, predict_peak, scaling_table
from overopt.estimator import bon_kl

SIZES = [3e3, 1e4, 3e4, 1e5, 3e5]


def synthetic_fits(form="bon", noise=0.0, seeds=3):
    """Curves generated from known coefficient lines, fitted back with the study's fit code."""
    rng = np.random.default_rng(0)
    rows = []
    for p in SIZES:
        a = 0.10 * np.log10(p) + 0.10
        b = -0.02 * np.log10(p) + 0.20
        for s in range(seeds):
            d = np.linspace(0.3, 4, 30)
            r = predict(form, d, a, b) + rng.normal(0, noise, d.size)
            rows.append({"policy": "p", "rm_params": p, "data": 1000, "seed": s, **fit_curve(form, d, r)})
    return pd.DataFrame(rows)


def test_scaling_fit_recovers_known_slopes():
    t = scaling_table(synthetic_fits(noise=0.005), "bon", B=100)
    a = t[t["coefficient"] == "alpha"].iloc[0]
    b = t[t["coefficient"] == "beta"].iloc[0]
    assert a["slope"] == pytest.approx(0.10, abs=0.01) and a["intercept"] == pytest.approx(0.10, abs=0.03)
    assert b["slope"] == pytest.approx(-0.02, abs=0.01) and b["intercept"] == pytest.approx(0.20, abs=0.03)
    assert a["slope_lo"] <= a["slope"] <= a["slope_hi"]
    assert a["r2"] > 0.95


def test_forecast_predicts_a_held_out_size_from_the_others():
    fits = synthetic_fits(noise=0.002)
    largest = max(SIZES)
    pred = predict_peak(fits[fits["rm_params"] < largest], "bon", largest, 1000, B=100)
    a, b = 0.10 * np.log10(largest) + 0.10, -0.02 * np.log10(largest) + 0.20
    assert pred["d_peak"] == pytest.approx(a / (2 * b), rel=0.05)
    assert pred["gold_peak"] == pytest.approx(a * a / (4 * b), rel=0.05)
    assert pred["extrapolated"]  # 3e5 lies outside the fitted 3e3..1e5


def test_predict_returns_known_peak_and_n_inside_the_range():
    fits = synthetic_fits()
    p = 3e4
    pred = predict_peak(fits, "bon", p, 1000, B=50)
    a, b = 0.10 * np.log10(p) + 0.10, -0.02 * np.log10(p) + 0.20
    assert pred["d_peak"] == pytest.approx(a / (2 * b), rel=1e-6)
    assert pred["kl_peak"] == pytest.approx((a / (2 * b)) ** 2, rel=1e-6)  # d = sqrt(KL)
    assert bon_kl(pred["n_peak"]) == pytest.approx(pred["kl_peak"], rel=1e-6)
    assert not pred["extrapolated"]
    with pytest.raises(ValueError, match="data size"):
        predict_peak(fits, "bon", p, 5000)


def test_bon_n_for_kl_inverts_the_kl_formula():
    for n in (1.5, 10, 1000, 60000):
        assert bon_n_for_kl(float(bon_kl(n))) == pytest.approx(n, rel=1e-6)


def test_predict_cli_refuses_to_extrapolate_silently(tmp_path, capsys):
    from overopt.cli import main

    (tmp_path / "fits").mkdir()
    synthetic_fits().to_csv(tmp_path / "fits" / "bon.csv", index=False)
    args = ["predict", "--results", str(tmp_path), "--data", "1000", "--method", "bon"]
    assert main(args + ["--rm-params", "3e4"]) == 0
    out = capsys.readouterr().out
    a, b = 0.10 * np.log10(3e4) + 0.10, -0.02 * np.log10(3e4) + 0.20
    assert f"peak d = sqrt(KL): {a / (2 * b):.3g}" in out
    assert main(args + ["--rm-params", "1e7"]) == 2
    assert "refusing to extrapolate" in capsys.readouterr().err
    assert main(args + ["--rm-params", "1e7", "--extrapolate"]) == 0
    assert "WARNING: extrapolating" in capsys.readouterr().out


def test_scaling_table_of_a_single_rm_size_is_empty_with_its_columns():
    fits = synthetic_fits(noise=0.005)
    one = fits[fits["rm_params"] == fits["rm_params"].min()]
    t = scaling_table(one, "bon", B=10)
    assert t.empty and {"method", "coefficient", "slope", "n_sizes"} <= set(t.columns)


def test_an_rl_peak_too_far_to_square_is_inf_not_an_error():
    """exp(alpha/beta - 1) for beta near 0 is finite but its square is not (the default run's
    RL forecast crashed on one such bootstrap line): KL at the peak comes out inf."""
    rows = [{"policy": "p", "rm_params": p, "data": 1000, "seed": 0, "alpha": 0.2, "beta": b}
            for p, b in ((1e4, 0.02), (1e5, 0.0102), (1e6, 0.0004))]
    pred = predict_peak(pd.DataFrame(rows), "rl", 1e6, 1000, B=50)
    assert pred["d_peak"] > 1e160 and np.isinf(pred["kl_peak"])
