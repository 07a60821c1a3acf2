"""Scaling of the fitted coefficients with RM size (paper Fig. 3) and the stop-point forecast.

alpha and beta of each method are fitted as lines in log10(RM parameters), per policy and data
size, with bootstrap intervals from resampling the curves (seeds) within each RM size. From the
lines, `predict` gives the peak of an RM not in the study: where to stop, and what gold it buys.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fit import peak


def fit_line(x, y) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = np.sum((y - y.mean()) ** 2)
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(1 - np.sum(resid**2) / ss) if ss > 0 else float("nan")}


def boot_lines(rows: pd.DataFrame, coef: str, B: int, rng) -> np.ndarray:
    """(B, 2) slopes and intercepts from resampling rows within each RM size."""
    groups = [g[coef].to_numpy() for _, g in rows.groupby("rm_params")]
    logp = np.log10(sorted(rows["rm_params"].unique()))
    out = np.empty((B, 2))
    for b in range(B):
        ys = [rng.choice(g, len(g)).mean() for g in groups]
        out[b] = np.polyfit(logp, ys, 1)
    return out


def scaling_table(fits: pd.DataFrame, method: str, B: int = 500, seed: int = 0) -> pd.DataFrame:
    """One row per (policy, data, coefficient): the line in log10(params) and its 95% intervals."""
    rng = np.random.default_rng(seed)
    rows = []
    keys = ["policy", "data"] + (["kl_penalty"] if "kl_penalty" in fits else [])
    for key, g in fits.dropna(subset=["alpha", "beta"]).groupby(keys):
        if g["rm_params"].nunique() < 2:
            continue
        means = g.groupby("rm_params")[["alpha", "beta"]].mean()
        for coef in ("alpha", "beta"):
            line = fit_line(np.log10(means.index.to_numpy()), means[coef])
            boot = boot_lines(g, coef, B, rng)
            lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
            rows.append({**dict(zip(keys, key)), "method": method, "coefficient": coef, **line,
                         "slope_lo": lo[0], "slope_hi": hi[0], "intercept_lo": lo[1], "intercept_hi": hi[1],
                         "params_min": int(means.index.min()), "params_max": int(means.index.max()),
                         "n_sizes": int(len(means))})
    # a grid with one RM size per cell has no lines: an empty table that still has its columns
    cols = keys + ["method", "coefficient", "slope", "intercept", "r2", "slope_lo", "slope_hi", "intercept_lo",
                   "intercept_hi", "params_min", "params_max", "n_sizes"]
    return pd.DataFrame(rows, columns=cols)


def bon_n_for_kl(kl: float) -> float:
    """The n whose best-of-n KL, log n - (n-1)/n, equals `kl` (monotone in n, so bisect)."""
    lo, hi = 1.0, 2.0
    while np.log(hi) - (hi - 1) / hi < kl:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.log(mid) - (mid - 1) / mid < kl else (lo, mid)
    return 0.5 * (lo + hi)


def predict_peak(fits: pd.DataFrame, method: str, rm_params: float, data: int, policy: str | None = None,
                 B: int = 500, seed: int = 0) -> dict:
    """Peak d, KL (and n for best-of-n) and gold at the peak for an RM of `rm_params`, from the
    coefficient lines of a finished study, with 95% bootstrap intervals and a range check."""
    form = "bon" if method == "bon" else "rl"
    g = fits[fits["data"] == data]
    if "kl_penalty" in g:
        g = g[g["kl_penalty"] == 0]
    if policy is not None:
        g = g[g["policy"] == policy]
    g = g.dropna(subset=["alpha", "beta"])
    if g.empty:
        raise ValueError(f"no {method} fits at data size {data}" + (f" for policy {policy}" if policy else ""))
    if g["policy"].nunique() > 1:  # the RM-size sweep lives on the policy with the most RM sizes
        sizes = g.groupby("policy")["rm_params"].nunique()
        if (sizes == sizes.max()).sum() > 1:
            raise ValueError(f"fits for several policies ({', '.join(sorted(g['policy'].unique()))}): pass --policy")
        g = g[g["policy"] == sizes.idxmax()]
    x = np.log10(rm_params)
    rng = np.random.default_rng(seed)
    ba, bb = boot_lines(g, "alpha", B, rng), boot_lines(g, "beta", B, rng)
    means = g.groupby("rm_params")[["alpha", "beta"]].mean()
    la = fit_line(np.log10(means.index.to_numpy()), means["alpha"])
    lb = fit_line(np.log10(means.index.to_numpy()), means["beta"])
    alpha, beta = la["slope"] * x + la["intercept"], lb["slope"] * x + lb["intercept"]

    def summary(a, b):
        with np.errstate(over="ignore"):
            p = peak(form, a, b)
            kl = float(np.square(p["d_peak"]))  # a far RL peak (exp(alpha/beta - 1)) squares to inf, not an error
        out = {"alpha": a, "beta": b, "d_peak": p["d_peak"], "kl_peak": kl, "gold_peak": p["gold_peak"]}
        if form == "bon":
            out["n_peak"] = bon_n_for_kl(kl) if np.isfinite(kl) and kl < 700 else float("nan")
        return out

    point = summary(alpha, beta)
    boots = pd.DataFrame([summary(a[0] * x + a[1], b[0] * x + b[1]) for a, b in zip(ba, bb)])
    res = {"method": method, "policy": g["policy"].iloc[0], "rm_params": rm_params, "data": data, **point}
    for k in point:
        v = boots[k].replace([np.inf, -np.inf], np.nan).dropna()
        res[f"{k}_lo"], res[f"{k}_hi"] = (np.percentile(v, 2.5), np.percentile(v, 97.5)) if len(v) else (np.nan, np.nan)
    lo, hi = int(means.index.min()), int(means.index.max())
    res["params_range"] = (lo, hi)
    res["extrapolated"] = not (lo <= rm_params <= hi)
    return res


def seed_means(fits: pd.DataFrame) -> pd.DataFrame:
    """One row per (policy, rm_params, data[, kl_penalty]): coefficients and measured peaks
    averaged over seeds."""
    keys = ["policy", "rm_params", "data"] + (["kl_penalty"] if "kl_penalty" in fits else [])
    cols = [c for c in ("alpha", "beta", "r2", "gold_max", "d_at_max", "d_end", "gold_end", "val_loss", "val_acc")
            if c in fits]
    return fits.groupby(keys, as_index=False)[cols].mean()


def forecast_table(fits: pd.DataFrame, method: str, B: int = 500, seed: int = 0) -> pd.DataFrame:
    """Hold out the largest RM of each (policy, data): fit the coefficient lines on the other
    sizes, predict its curve's peak, and set the prediction against what was measured.

    The measured peak is the highest seed-mean gold on the curve; where it sits at the end of
    the curve (`peak_observed` false) the true peak lies beyond the measured range. The error
    `gold_rel_err` compares like with like: the predicted curve's highest gold over the measured
    range of d against the measured highest gold.
    """
    if "kl_penalty" in fits:
        fits = fits[fits["kl_penalty"] == 0]
    rows = []
    for (policy, data), g in fits.dropna(subset=["alpha", "beta"]).groupby(["policy", "data"]):
        sizes = sorted(g["rm_params"].unique())
        if len(sizes) < 3:  # a line needs two sizes besides the held-out one
            continue
        largest = sizes[-1]
        p = predict_peak(g[g["rm_params"] < largest], method, largest, data, B=B, seed=seed)
        m = seed_means(g[g["rm_params"] == largest]).iloc[0]
        observed = bool(m["d_at_max"] < m["d_end"] - 1e-9)
        # compare like with like: the predicted curve's best over the measured range of d
        from .fit import predict

        dd = np.linspace(0, m["d_end"], 400)
        in_range = float(np.max(predict(method, dd, p["alpha"], p["beta"])))
        rows.append({
            "method": method, "policy": policy, "data": int(data), "rm_params": int(largest),
            "fitted_on": ";".join(str(int(s)) for s in sizes[:-1]),
            **{f"{k}_pred": p[k] for k in ("alpha", "beta", "d_peak", "gold_peak")},
            **{f"{k}_pred_{e}": p[f"{k}_{e}"] for k in ("d_peak", "gold_peak") for e in ("lo", "hi")},
            "alpha_meas": m["alpha"], "beta_meas": m["beta"], "d_at_max_meas": m["d_at_max"],
            "gold_max_meas": m["gold_max"], "peak_observed": observed, "d_end": m["d_end"],
            "gold_max_pred_in_range": in_range,
            "gold_rel_err": (in_range - m["gold_max"]) / abs(m["gold_max"]) if m["gold_max"] else np.nan,
        })
    return pd.DataFrame(rows)


def extrapolation_table(bon: tuple, rl: tuple | None, bon_max_d: float, rl_max_d: float):
    """Figure 26: fit each seed-mean curve of the main policy at the largest data size on its
    left part (d <= max_d), and read the error of the prediction at the curve's end.

    `bon`, `rl`: (curves, fits) of each method (rl: None where the grid has none; its KL-penalised
    runs are left out). Returns (curves by method with their RM sizes, max_d by method, the table)."""
    from .findings import seed_mean_curves
    from .fit import extrapolation_error
    from .keys import main_policy, with_params

    curves = {"bon": with_params(*bon)}
    max_d = {"bon": bon_max_d}
    if rl is not None:
        runs, fits = rl
        curves["rl"] = with_params(runs[runs["kl_penalty"] == 0], fits)
        max_d["rl"] = rl_max_d
    pol = main_policy(bon[1])
    rows = []
    for method, c in curves.items():
        c = c[c["policy"] == pol]
        top = c["data"].max()
        for key, m in seed_mean_curves(c[c["data"] == top], "n" if method == "bon" else "step").items():
            rows.append({"method": method, "policy": key[0], "rm_params": key[1], "data": key[2],
                         "rm": c[c["rm_params"] == key[1]]["rm"].iloc[0], "max_d": max_d[method],
                         **extrapolation_error(method, m["d"], m["gold"], max_d[method])})
    return curves, max_d, pd.DataFrame(rows)
