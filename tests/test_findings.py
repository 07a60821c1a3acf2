"""The findings check, the forecast and the extrapolation error on hand-made results."""

import numpy as np
import pandas as pd
import pytest

from overopt.estimator import bon_kl, n_grid
from overopt.cli import main as cli
from overopt.findings import check, first_d, load, measured_peak_d, penalty_beats_early_stopping, per_seed_penalty_gaps
from overopt.fit import extrapolation_error, fit_curve, predict
from overopt.scaling import forecast_table

SIZES = {"r1": 10_000, "r2": 100_000, "r3": 1_000_000}


def coefs(params, data, turnover):
    """A family where larger and better-fed RMs peak later and higher, or (turnover=False) where
    gold keeps rising with d for every RM."""
    x = np.log10(params)
    a = 0.1 * x + 0.05 * np.log10(data / 1000)
    b = 0.39 - 0.06 * x if turnover else -0.02
    return a, b


def make_results(root, turnover=True):
    ns = n_grid(1024)
    d = np.sqrt(bon_kl(ns))
    rows = []
    for rm, p in SIZES.items():
        for data in (1000, 4000):
            for seed in (0, 1):
                a, b = coefs(p, data, turnover)
                gold = predict("bon", d, a, b)
                c = pd.DataFrame({"policy": "pol", "rm": rm, "data": data, "seed": seed, "n": ns, "kl": d**2, "d": d,
                                  "gold": gold, "gold_se": 0.01, "proxy": 1.5 * d, "proxy_se": 0.01})
                path = root / "bon" / "pol" / rm / f"n{data}" / f"s{seed}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                c.to_csv(path, index=False)
                rows.append({"policy": "pol", "rm": rm, "rm_params": p, "data": data, "seed": seed,
                             **fit_curve("bon", d, gold), "proxy_monotone": True})
    (root / "fits").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "fits" / "bon.csv", index=False)
    return root


def tables(root):
    """`findings.load` on what a results directory holds (a test's own layout: keys are in the files)."""
    fits = {m: str(root / "fits" / f"{m}.csv") if (root / "fits" / f"{m}.csv").exists() else None for m in ("bon", "rl")}
    return load(fits["bon"], fits["rl"], None, sorted(map(str, (root / "bon").rglob("*.csv"))),
                sorted(map(str, (root / "rl").rglob("*.csv"))))


def findings_args(root):
    return (["findings", "--bon-fits", str(root / "fits" / "bon.csv"), "--bon-curves"]
            + sorted(map(str, (root / "bon").rglob("*.csv"))))


def by_name(findings):
    return {f.name.split(" (")[0]: f for f in findings}


def test_findings_pass_on_a_family_that_turns_over(tmp_path):
    f = by_name(check(tables(make_results(tmp_path))))
    assert f["proxy rises monotonically with d"].status == "PASS"
    assert f["gold turns over for the smallest RM"].status == "PASS"
    assert f["larger RMs peak higher"].status == "PASS"
    assert f["larger RMs peak later"].status == "PASS"
    assert f["more data helps"].status == "PASS"
    assert f["best-of-n d(alpha - beta d) fits with R^2 >= 0.95"].status == "PASS"


def test_findings_fail_where_gold_never_turns_over(tmp_path, capsys):
    root = make_results(tmp_path, turnover=False)
    f = by_name(check(tables(root)))
    assert f["gold turns over for the smallest RM"].status == "FAIL"
    assert "max" in f["gold turns over for the smallest RM"].detail
    assert cli(findings_args(root)) == 1  # a FAIL exits non-zero
    assert "FAIL  gold turns over" in capsys.readouterr().out
    assert cli(findings_args(root) + ["--no-fail"]) == 0


def make_rl_results(root, peaks):
    """PPO-like runs that rise linearly and fall after a peak at d = peaks[rm][0], as fast as
    peaks[rm][1] (None: still rising at the end). d(alpha - beta log d) fits them poorly: a gentle
    fall after 1.0 gets a fitted peak at 1.55, a steep one after 1.6 one at 0.75."""
    d = np.linspace(0.0, 3.0, 31)
    rows = []
    for rm, p in SIZES.items():
        d0, fall = peaks[rm] or (9.0, 0.0)
        gold = 0.5 * np.minimum(d, d0) - fall * np.maximum(d - d0, 0) ** 2
        for seed in (0, 1):
            c = pd.DataFrame({"policy": "pol", "rm": rm, "data": 4000, "kl_penalty": 0.0, "seed": seed,
                              "step": np.arange(d.size) * 5, "kl": d**2, "d": d, "gold": gold, "gold_se": 0.01,
                              "proxy": d, "proxy_se": 0.01})
            path = root / "rl" / "pol" / rm / "n4000" / "kl0" / f"s{seed}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            c.to_csv(path, index=False)
            keep = d >= 0.3
            rows.append({"policy": "pol", "rm": rm, "rm_params": p, "data": 4000, "kl_penalty": 0.0, "seed": seed,
                         **fit_curve("rl", d[keep], gold[keep])})
    (root / "fits").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "fits" / "rl.csv", index=False)
    return root


def test_rl_peaks_later_is_read_off_the_curves_not_the_fits(tmp_path):
    f = by_name(check(tables(make_rl_results(tmp_path / "a", {"r1": (1.0, 0.05), "r2": (1.6, 1.5), "r3": None}))))
    f = f["larger RMs peak later"]
    # the fitted peaks put the 2nd size first; the curves put it second
    assert f.status == "PASS" and "measured" in f.name
    assert "1.00, 1.60, >= 3.00 (rho 1.00; fitted peaks 1.55, 0.75, none)" in f.detail
    f = by_name(check(tables(make_rl_results(tmp_path / "b", {"r1": (2.0, 1.5), "r2": (1.6, 1.5), "r3": (1.0, 1.5)}))))
    assert f["larger RMs peak later"].status == "FAIL" and "2.00, 1.60, 1.00 (rho -1.00" in f["larger RMs peak later"].detail


def test_measured_peak_is_open_ended_for_a_curve_still_rising():
    c = pd.DataFrame({"d": [0.0, 1.0, 2.0, 2.5], "gold": [0.0, 0.5, 0.4, 0.6]})
    assert measured_peak_d(c) == (float("inf"), 2.5)
    assert measured_peak_d(c.iloc[:3]) == (1.0, 2.0)


def test_first_d_interpolates_from_the_origin():
    c = pd.DataFrame({"d": [0.0, 1.0, 2.0], "gold": [0.9, 0.4, 0.8]})  # the d = 0 point is noise
    assert first_d(c, 0.6) == pytest.approx(1.5)
    assert first_d(c, 0.2) == pytest.approx(0.5)
    assert first_d(c, 1.0) == float("inf")


def test_a_penalty_beats_early_stopping_only_beyond_the_noise_of_both_runs():
    base = pd.DataFrame({"d": [0.0, 0.5, 1.0, 1.5, 2.0], "gold": [0.0, 0.4, 0.7, 0.8, 0.3], "gold_se": 0.03})
    pen = lambda d, g: pd.DataFrame({"d": [0.0, 0.6, d], "gold": [0.0, 0.5, g], "gold_se": 0.03})
    # at d <= 1.2 the unpenalised frontier is 0.70; 2 SE of a gap = 2 x 0.03 x sqrt(2) = 0.085
    better, detail = penalty_beats_early_stopping(base, pen(1.2, 0.77))
    assert not better and "vs 0.70" in detail and "2 SE 0.085" in detail  # beyond one run's 2 SE, not both
    assert penalty_beats_early_stopping(base, pen(1.2, 0.95))[0]
    # the frontier takes the best point at no more KL, wherever it is
    assert not penalty_beats_early_stopping(base, pen(1.6, 0.85))[0]  # vs 0.80 at d 1.5
    assert penalty_beats_early_stopping(base, pen(1.6, 0.95))[0]
    assert penalty_beats_early_stopping(base, pen(0.4, 0.2))[0]  # nothing unpenalised at d <= 0.4: vs 0


def test_per_seed_gaps_catch_a_penalty_that_wins_on_every_seed():
    d = np.array([0.0, 0.5, 1.0, 1.5])
    base = pd.concat([pd.DataFrame({"seed": s, "d": d, "gold": [0.0, 0.3, 0.6, 0.8]}) for s in range(4)])
    pen = lambda gaps: pd.concat([pd.DataFrame({"seed": s, "d": [0.0, 0.6, 1.0], "gold": [0.0, 0.4, 0.6 + g]})
                                  for s, g in enumerate(gaps)])
    better, detail = per_seed_penalty_gaps(base, pen([0.09, 0.11, 0.10, 0.10]))
    assert better and "mean +0.100" in detail  # small and steady: beyond 2 SE over seeds
    assert not per_seed_penalty_gaps(base, pen([0.3, -0.25, 0.2, -0.15]))[0]  # mean +0.025, seeds disagree
    assert per_seed_penalty_gaps(base, pen([0.1]).assign(seed=0)) == (False, "")  # one seed: no test


def test_forecast_predicts_the_held_out_largest_rm():
    rows = []
    d = np.linspace(0.05, 4.0, 60)
    line = lambda p: (0.1 * np.log10(p), 0.5 - 0.07 * np.log10(p))  # the largest peaks at d = 3.75
    for rm, p in SIZES.items():
        for seed in (0, 1, 2):
            a, b = line(p)
            g = predict("bon", d, a, b) + np.random.default_rng(seed).normal(0, 0.002, d.size)
            i = int(np.argmax(g))
            rows.append({"policy": "pol", "rm": rm, "rm_params": p, "data": 1000, "seed": seed,
                         **fit_curve("bon", d, g), "gold_max": g[i], "d_at_max": d[i], "d_end": d[-1]})
    t = forecast_table(pd.DataFrame(rows), "bon", B=50)
    assert len(t) == 1
    r = t.iloc[0]
    a, b = line(SIZES["r3"])
    assert r["fitted_on"] == "10000;100000" and r["rm_params"] == SIZES["r3"]
    assert r["alpha_pred"] == pytest.approx(a, abs=0.01) and r["beta_pred"] == pytest.approx(b, abs=0.01)
    assert r["d_peak_pred"] == pytest.approx(a / (2 * b), rel=0.05)
    assert r["gold_peak_pred"] == pytest.approx(a * a / (4 * b), rel=0.05)
    assert abs(r["gold_rel_err"]) < 0.05 and bool(r["peak_observed"])


def test_extrapolation_error_is_zero_for_the_true_form_and_not_for_another():
    d = np.linspace(0.1, 3.0, 30)
    exact = extrapolation_error("bon", d, predict("bon", d, 0.6, 0.1), 1.5)
    assert exact["error_last"] == pytest.approx(0.0, abs=1e-9) and exact["fit_points"] == int((d <= 1.5).sum())
    other = extrapolation_error("bon", d, predict("rl", d, 0.6, 0.3), 1.5)
    assert abs(other["error_last"]) > 0.1
