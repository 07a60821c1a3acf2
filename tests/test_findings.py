"""The findings protocol (docs/findings.md) on synthetic families built to show each finding or
not to, the cluster bootstrap behind its intervals, the findings CLI, the forecast and the
extrapolation error."""

import os

import numpy as np
import pandas as pd
import pytest

from overopt.bootstrap import Draw, draws
from overopt.cli import main as cli
from overopt.estimator import bon_kl, n_grid
from overopt.fit import extrapolation_error, fit_curve, predict
from overopt.protocol import NOT_REACHED, Cell, View, findings, first_d, peak, spearman
from overopt.scaling import forecast_table

SIZES = {"r1": 10_000, "r2": 100_000, "r3": 1_000_000}
NS = n_grid(1024)
D = np.sqrt(bon_kl(NS))


def coefs(params, data, turnover):
    """A family where larger and better-fed RMs peak later and higher, or (turnover=False) where
    gold keeps rising with d for every RM."""
    x = np.log10(params)
    a = 0.1 * x + 0.05 * np.log10(data / 1000)
    b = 0.39 - 0.06 * x if turnover else -0.02
    return a, b


def bon_family(turnover=True, R=3, P=40, seed=0):
    """Best-of-n cells: the family's curve, plus per prompt a shared difficulty that scales with d
    and per replicate a small offset in slope: noise the bootstrap must carry."""
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 0.05, (P, 1))
    cells = {}
    for rm, p in SIZES.items():
        for data in (1000, 4000):
            a, b = coefs(p, data, turnover)
            gold = np.stack([predict("bon", D, a + rng.normal(0, 0.003), b) + prompt * D + rng.normal(0, 0.01, (P, D.size))
                             for _ in range(R)])
            loss = 0.7 - 0.02 * np.log10(p) - 0.01 * np.log10(data) + rng.normal(0, 0.001, R)
            cells[("pol", rm, data)] = Cell(("pol", rm, data), p, list(range(R)), NS.astype(float), np.tile(D, (R, 1)),
                                            gold, loss)
    return cells


def rl_family(peaks, R=3, P=32, penalty=None, seed=1, noise=0.02):
    """PPO-like cells that rise linearly and fall after a peak at d = peaks[rm][0], as fast as
    peaks[rm][1] (None: still rising at the end); `penalty`: (rm, gold gain over the unpenalised
    run's frontier) adds a penalised run of that RM."""
    rng = np.random.default_rng(seed)
    d = np.linspace(0.0, 3.0, 31)
    steps = np.arange(d.size) * 5.0
    cells = {}

    def cell(key, p, g):
        gold = np.stack([g + rng.normal(0, noise, (P, d.size)) for _ in range(R)])
        cells[key] = Cell(key, p, list(range(R)), steps, np.tile(d, (R, 1)), gold)

    for rm, p in SIZES.items():
        d0, fall = peaks[rm] or (9.0, 0.0)
        cell(("pol", rm, 4000, 0.0), p, 0.5 * np.minimum(d, d0) - fall * np.maximum(d - d0, 0) ** 2)
    if penalty:
        rm, gain = penalty
        d0, fall = peaks[rm] or (9.0, 0.0)
        frontier = 0.5 * np.minimum(d, d0)
        cell(("pol", rm, 4000, 0.5), SIZES[rm], np.where(d <= 1.0, frontier + gain * d, frontier[10] + gain - (d - 1.0)))
    return cells


def run(bon=None, rl=None, B=200, policy_params=None):
    return {r.fid + (" RL" if "RL" in r.name and r.fid in ("F3", "F4") else ""): r
            for r in findings(bon or {}, rl or {}, "pol", 64, 0.3, policy_params or {}, B=B)}


def test_a_family_built_to_show_the_best_of_n_findings_passes_them():
    f = run(bon_family())
    for fid in ("F1", "F3", "F4", "F5", "F6", "F7", "F9", "F10"):
        assert f[fid].status == "PASS", f[fid].line()
        assert f[fid].detail.endswith("holds in 3 of 3 replicates"), f[fid].line()
    assert "[" in f["F3"].detail  # an interval beside every bootstrapped statistic
    assert f["F2"].status == f["F8"].status == f["F12"].status == "SKIP"  # no RL cells


def test_findings_evaluated_in_several_processes_equal_one_by_one(monkeypatch):
    import overopt.protocol as protocol

    evaluate, pids = protocol.evaluate, []

    def recorded(*args):  # each result says which process evaluated it
        result = evaluate(*args)
        result.pid = os.getpid()
        return result

    monkeypatch.setattr(protocol, "evaluate", recorded)
    cells = bon_family()
    one = findings(cells, {}, "pol", 64, 0.3, {}, B=50)
    two = findings(cells, {}, "pol", 64, 0.3, {}, B=50, workers=2)
    assert [r.line() for r in two] == [r.line() for r in one]
    # (which worker takes which finding is the pool's choice: at least one other process, never this one)
    assert {r.pid for r in one} == {os.getpid()} and os.getpid() not in {r.pid for r in two}
    assert len(one) > 2 and any("[" in r.detail for r in one)


def test_a_family_built_not_to_turn_over_fails_the_turnover_and_the_order():
    f = run(bon_family(turnover=False))
    assert f["F1"].status == "FAIL" and "peak not reached" in f["F1"].detail
    assert f["F4"].status == "FAIL"  # every peak beyond the range: no order to read
    assert f["F10"].status == "FAIL"  # beta does not fall with size here


def test_rl_peaks_later_reads_measured_peaks_and_ranks_not_reached_last():
    f = run(rl=rl_family({"r1": (1.0, 0.05), "r2": (1.6, 1.5), "r3": None}))
    assert f["F4 RL"].status == "PASS" and "rho: +1.00" in f["F4 RL"].detail
    assert f["F2"].status == "PASS"  # the smallest RM falls after d = 1
    f = run(rl=rl_family({"r1": (2.0, 1.5), "r2": (1.6, 1.5), "r3": (1.0, 1.5)}))
    assert f["F4 RL"].status == "FAIL" and "rho: -1.00" in f["F4 RL"].detail


def test_a_penalty_is_judged_by_an_equivalence_margin():
    peaks = {"r1": (1.0, 0.05), "r2": (1.6, 1.5), "r3": (2.0, 1.5)}
    same = run(rl=rl_family(peaks, penalty=("r3", 0.0)))["F13"]
    assert same.status == "PASS", same.line()  # no better than early stopping, within the 0.1 margin
    better = run(rl=rl_family(peaks, penalty=("r3", 0.4)))["F13"]
    assert better.status == "FAIL", better.line()
    noisy = run(rl=rl_family(peaks, penalty=("r3", 0.05), noise=0.6))["F13"]
    assert noisy.status == "INCONCLUSIVE", noisy.line()  # the interval holds both 0 and the margin


def test_the_protocols_bootstrap_recovers_a_known_se_where_the_sqrt_seeds_shortcut_does_not():
    """Every replicate is measured on the same P prompts (one pool): gold = prompt effect (sd 1,
    shared) + noise (sd 0.3). The replicate-mean's SE is about sqrt(1 / P + 0.09 / (R P)); the
    per-replicate SE over prompts divided by sqrt(R) is too small by about sqrt(R)."""
    rng = np.random.default_rng(5)
    R, P = 8, 60
    prompt = rng.normal(0, 1.0, (P, 1))
    gold = np.stack([prompt + rng.normal(0, 0.3, (P, 1)) for _ in range(R)])
    cells = {"c": Cell("c", 1, list(range(R)), np.zeros(1), np.zeros((R, 1)), gold)}
    boot = [View(cells, dr).curve("c")[1][0] for dr in draws(2000, 0, R, P)]
    truth = np.sqrt(1.0 / P + 0.09 / (R * P))
    assert np.std(boot) == pytest.approx(truth, rel=0.2)
    shortcut = np.sqrt(np.mean(gold.std(axis=1, ddof=1) ** 2 / P)) / np.sqrt(R)
    assert shortcut < 0.5 * truth


def test_prompts_nested_in_replicates_are_drawn_per_replicate():
    """Each replicate has its own P prompts (a pool per replicate): gold = replicate effect (sd 0.5)
    + prompt effect (sd 1). The replicate mean's SE is sqrt(0.25 / R + 1 / (R P)); drawing one set
    of prompt indices for all (the shared design) would keep it, but treating these cells as
    shared must not be what happens: the cell says its pools differ."""
    rng = np.random.default_rng(6)
    R, P = 30, 40
    gold = np.stack([rng.normal(0, 0.5) + rng.normal(0, 1.0, (P, 1)) for _ in range(R)])
    cell = Cell("c", 1, list(range(R)), np.zeros(1), np.zeros((R, 1)), gold, pools=list(range(R)))
    assert cell.nested
    boot = [View({"c": cell}, dr).curve("c")[1][0] for dr in draws(2000, 0, R, P)]
    assert np.std(boot) == pytest.approx(np.sqrt(0.25 / R + 1.0 / (R * P)), rel=0.2)


def test_a_cell_with_fewer_replicates_maps_the_same_draw_onto_its_own():
    dr = Draw(np.array([0.1, 0.6, 0.9, 0.3]), np.array([[0.5]]))
    assert dr.rep_index(4).tolist() == [0, 2, 3, 1] and dr.rep_index(2).tolist() == [0, 1]
    assert Draw(None, None).rep_index(3).tolist() == [0, 1, 2]


def test_spearman_equals_scipys_with_ties_and_nans():
    """The protocol's own rank correlation gives scipy's `spearmanr` on small samples with ties,
    and NaN where scipy's is NaN or a side is constant."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5, 8):
        for _ in range(200):
            x, y = rng.integers(0, 4, n).astype(float), rng.normal(size=n).round(1)
            if rng.random() < 0.1:
                y[rng.integers(n)] = np.nan
            want = float("nan") if np.ptp(x) == 0 or np.ptp(y) == 0 else float(spearmanr(x, y).statistic)
            got = spearman(x, y)
            assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want, abs=1e-15), (x, y)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_peak_and_first_d():
    d = np.array([0.0, 1.0, 2.0, 2.5])
    assert peak(d, np.array([0.0, 0.5, 0.4, 0.6]))[1] == NOT_REACHED  # still rising: not reached
    assert peak(d[:3], np.array([0.0, 0.5, 0.4]))[1] == 1.0
    g = np.array([0.9, 0.4, 0.8])  # the d = 0 point is noise
    assert first_d(d[:3], g, 0.6) == pytest.approx(1.5) and first_d(d[:3], g, 0.2) == pytest.approx(0.5)
    assert first_d(d[:3], g, 1.0) == float("inf")


def test_the_findings_command_reads_scores_files_by_their_keys(tmp_path, capsys):
    """The CLI end to end on files as the workflow writes them: scores with their keys in the
    metadata, a fit table; a FAIL exits 1 unless --no-fail."""
    from overopt.pool import write_scores

    cells = bon_family(turnover=False, R=2, P=6)
    rows, files = [], []
    rng = np.random.default_rng(0)
    for (pol, rm, data), c in cells.items():
        for r, s in enumerate(c.seeds):
            # a pool whose best-of-n gold is anything: the command must run and name every finding
            proxy, gold = rng.normal(size=(6, 64)), rng.normal(size=(6, 64))
            df = pd.DataFrame({"prompt_id": np.repeat(np.arange(6), 64), "sample_id": np.tile(np.arange(64), 6),
                               "proxy": proxy.ravel(), "gold": gold.ravel()})
            f = tmp_path / f"{rm}-{data}-{s}.parquet"
            write_scores((df, 0.0), str(f), {"policy": pol, "rm": rm, "data": data, "seed": s})
            files.append(str(f))
            rows.append({"policy": pol, "rm": rm, "rm_params": c.rm_params, "data": data, "seed": s,
                         "val_loss": c.val_loss[r], "proxy_monotone": True})
    pd.DataFrame(rows).to_csv(tmp_path / "bon.csv", index=False)
    args = ["findings", "--bon-fits", str(tmp_path / "bon.csv"), "--scores", *files, "--bootstrap", "50"]
    rc = cli(args)
    out = capsys.readouterr().out
    assert [l.split()[1] for l in out.splitlines()][:14] == [f"F{i}" for i in (1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12)]
    assert rc == (1 if any(l.startswith("FAIL") for l in out.splitlines()) else 0)
    assert cli(args + ["--no-fail"]) == 0


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


def test_a_larger_policy_gains_less_at_a_similar_kl_or_not():
    def cells(scale_large, peak_shift=1.0, R=2, P=30):
        rng = np.random.default_rng(3)
        out = {}
        for pol, scale, shift in (("small", 1.0, 1.0), ("large", scale_large, peak_shift)):
            g = predict("bon", D / shift, 0.4, 0.1) * scale
            gold = np.stack([g + rng.normal(0, 0.01, (P, D.size)) for _ in range(R)])
            out[(pol, "r", 1000)] = Cell((pol, "r", 1000), 1000, list(range(R)), NS.astype(float), np.tile(D, (R, 1)),
                                         gold, np.zeros(R))
        return out

    sizes = {"small": 10, "large": 100}
    run_ = lambda c: {r.fid: r for r in findings(c, {}, "small", 64, 0.3, sizes, B=100)}["F14"]
    assert run_(cells(0.7)).status == "PASS"
    assert run_(cells(1.3)).status == "FAIL"  # the larger policy gains more
    shifted = run_(cells(0.7, peak_shift=1.6))  # less gold, but its peak d 60% later
    assert shifted.status == "FAIL" and "not within 25%" in shifted.detail


def test_the_robustness_table_reads_each_studys_findings(tmp_path):
    from overopt.protocol import Result
    from overopt.robustness import read_findings, robustness_table

    a = [Result("F1", "gold turns over (best-of-n)", "PASS", "x; holds in 3 of 4 replicates"),
         Result("F3", "larger RMs reach more gold (best-of-n)", "FAIL", "slope: +0.1 [-0.1, +0.2]; holds in 1 of 4 replicates"),
         Result("F13", "a KL penalty is no better", "SKIP", "not testable on this grid"),
         Result("S1", "best-of-n proxy rises with n", "OK", "36/36 curves")]
    b = [Result("F1", "gold turns over (best-of-n)", "INCONCLUSIVE", "x; holds in 0 of 2 replicates")]
    for name, rows in (("a", a), ("b", b)):
        (tmp_path / f"{name}.txt").write_text("\n".join(r.line() for r in rows) + "\n")
    assert [r["fid"] for r in read_findings(tmp_path / "a.txt")] == ["F1", "F3", "F13"]  # the sanity line is no finding
    table = robustness_table({"world A": str(tmp_path / "a.txt"), "world B": str(tmp_path / "b.txt")}).splitlines()
    assert table[0] == "| finding | world A | world B |"
    assert table[2] == "| F1 gold turns over (best-of-n) | PASS, 3 of 4 | INCONCLUSIVE, 0 of 2 |"
    assert table[3] == "| F3 larger RMs reach more gold (best-of-n) | FAIL, 1 of 4 |  |"
    assert table[4] == "| F13 a KL penalty is no better | not testable |  |"
