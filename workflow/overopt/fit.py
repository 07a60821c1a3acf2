"""The paper's functional forms, fitted by least squares (both are linear in alpha, beta).

    best-of-n:  R(d) = d (alpha - beta d)          peak d* = alpha / (2 beta)
    RL:         R(d) = d (alpha - beta log d)      peak d* = exp(alpha / beta - 1)
"""

from __future__ import annotations

import numpy as np

FORMS = {
    "bon": lambda d: np.stack([d, -d * d], axis=1),
    "rl": lambda d: np.stack([d, -d * np.log(d)], axis=1),
}


def predict(form: str, d, alpha: float, beta: float) -> np.ndarray:
    return FORMS[form](np.asarray(d, dtype=float)) @ np.array([alpha, beta])


def fit_curve(form: str, d, r, weights=None) -> dict:
    """alpha, beta and R^2 of `form` through the origin, on points with d > 0."""
    d, r = np.asarray(d, float), np.asarray(r, float)
    keep = d > 0
    d, r = d[keep], r[keep]
    X = FORMS[form](d)
    w = np.ones_like(d) if weights is None else np.asarray(weights, float)[keep]
    sw = np.sqrt(w)
    (alpha, beta), *_ = np.linalg.lstsq(X * sw[:, None], r * sw, rcond=None)
    resid = r - X @ np.array([alpha, beta])
    ss_tot = np.sum(w * (r - np.average(r, weights=w)) ** 2)
    r2 = 1 - np.sum(w * resid**2) / ss_tot if ss_tot > 0 else float("nan")
    return {"alpha": float(alpha), "beta": float(beta), "r2": float(r2), **peak(form, alpha, beta)}


def peak(form: str, alpha: float, beta: float) -> dict:
    """Peak location and gold value; empty (NaN) where the fitted curve never turns over."""
    if beta <= 0:
        return {"d_peak": float("nan"), "gold_peak": float("nan")}
    d = alpha / (2 * beta) if form == "bon" else float(np.exp(alpha / beta - 1))
    return {"d_peak": float(d), "gold_peak": float(predict(form, [d], alpha, beta)[0])}


def load_proxy_metrics(metrics: list[str]) -> dict:
    """Each proxy's metrics.json, keyed by its grid keys (`keys.CELL`), as the proxy recorded them."""
    from .keys import key_tuple, read_proxy_metrics

    out = {}
    for m in metrics:
        d = read_proxy_metrics(m)
        out[key_tuple(d["keys"])] = d
    return out


def bootstrap(form: str, d: np.ndarray, per_prompt: np.ndarray, B: int = 200, seed: int = 0) -> dict:
    """95% intervals of alpha and beta from resampling prompts (rows of `per_prompt`)."""
    rng = np.random.default_rng(seed)
    P = per_prompt.shape[0]
    ab = np.array([
        [f["alpha"], f["beta"]]
        for f in (fit_curve(form, d, per_prompt[rng.integers(0, P, P)].mean(0)) for _ in range(B))
    ])
    lo, hi = np.percentile(ab, [2.5, 97.5], axis=0)
    return {"alpha_lo": lo[0], "alpha_hi": hi[0], "beta_lo": lo[1], "beta_hi": hi[1]}


def fit_bon_table(scores: list[str], metrics: list[str], out: str, B: int = 200) -> "pd.DataFrame":
    """One row per best-of-n curve: the fit, its bootstrap intervals, and the measured peak."""
    import pandas as pd

    from .estimator import bon_kl, bon_per_prompt, n_grid, scores_matrix
    from .keys import key_tuple, scores_metadata
    from .util import atomic_file

    params = load_proxy_metrics(metrics)
    rows = []
    for path in scores:
        g = scores_metadata(path)["keys"]
        proxy, gold = scores_matrix(pd.read_parquet(path))
        ns = n_grid(proxy.shape[1])
        d = np.sqrt(bon_kl(ns))
        per_gold, per_proxy = bon_per_prompt(proxy, gold, ns)
        curve = per_gold.mean(0)
        m = params[key_tuple(g)]
        i = int(np.argmax(curve))
        rows.append({
            "policy": g["policy"], "rm": g["rm"], "rm_params": m["params"], "data": int(g["data"]),
            "seed": int(g["seed"]), "val_acc": m["val_acc"], "val_loss": m["val_loss"],
            **fit_curve("bon", d, curve), **bootstrap("bon", d, per_gold, B),
            "gold_max": float(curve[i]), "d_at_max": float(d[i]), "gold_end": float(curve[-1]),
            "d_end": float(d[-1]), "proxy_end": float(per_proxy.mean(0)[-1]),
            "proxy_monotone": bool(np.all(np.diff(per_proxy.mean(0)) >= -1e-9)),
        })
    cols = ["policy", "rm", "rm_params", "data", "seed", "alpha", "alpha_lo", "alpha_hi", "beta", "beta_lo",
            "beta_hi", "r2", "d_peak", "gold_peak"]
    df = pd.DataFrame(rows)
    df = df[cols + [c for c in df.columns if c not in cols]].sort_values(["policy", "rm_params", "data", "seed"])
    with atomic_file(out) as tmp:
        df.to_csv(tmp, index=False)
    return df


def fit_rl_table(runs: list[str], metrics: list[str], out: str, min_d: float, B: int = 200) -> "pd.DataFrame":
    """One row per PPO run: d(alpha - beta log d) fitted on points with d >= `min_d`.

    The RL form is known to fail very near d = 0 (paper, Sec. 3.1), hence the cut-off. The
    intervals are a parametric bootstrap: each evaluated point is redrawn from N(gold, gold_se).
    """
    import pandas as pd

    from .keys import RUN, key_tuple, require_columns
    from .util import atomic_file

    params = load_proxy_metrics(metrics)
    rng = np.random.default_rng(0)
    rows = []
    for path in runs:
        c = pd.read_csv(path)
        require_columns(c, RUN, path)
        g = c.iloc[0]
        m = params[key_tuple(g)]
        keep = c["d"] >= min_d
        d, r, se = c.loc[keep, "d"].to_numpy(), c.loc[keep, "gold"].to_numpy(), c.loc[keep, "gold_se"].to_numpy()
        i = int(np.argmax(c["gold"]))
        row = {"policy": g["policy"], "rm": g["rm"], "rm_params": m["params"], "data": int(g["data"]),
               "kl_penalty": float(g["kl_penalty"]), "seed": int(g["seed"]), "val_acc": m["val_acc"], "val_loss": m["val_loss"],
               "fit_points": int(keep.sum()), "fit_min_d": min_d,
               "gold_max": float(c["gold"].iloc[i]), "d_at_max": float(c["d"].iloc[i]),
               "step_at_max": int(c["step"].iloc[i]), "gold_end": float(c["gold"].iloc[-1]),
               "d_end": float(c["d"].iloc[-1]), "proxy_end": float(c["proxy"].iloc[-1])}
        if keep.sum() >= 3:
            row.update(fit_curve("rl", d, r))
            ab = np.array([[f["alpha"], f["beta"]] for f in
                           (fit_curve("rl", d, r + se * rng.standard_normal(len(r))) for _ in range(B))])
            lo, hi = np.percentile(ab, [2.5, 97.5], axis=0)
            row.update(alpha_lo=lo[0], alpha_hi=hi[0], beta_lo=lo[1], beta_hi=hi[1])
        rows.append(row)
    cols = ["policy", "rm", "rm_params", "data", "kl_penalty", "seed", "alpha", "alpha_lo", "alpha_hi", "beta",
            "beta_lo", "beta_hi", "r2", "d_peak", "gold_peak"]
    df = pd.DataFrame(rows)
    for col in cols:
        if col not in df:
            df[col] = np.nan
    df = df[cols + [c for c in df.columns if c not in cols]].sort_values(["policy", "rm_params", "data", "kl_penalty", "seed"])
    with atomic_file(out) as tmp:
        df.to_csv(tmp, index=False)
    return df


def extrapolation_error(form: str, d, gold, max_d: float) -> dict:
    """Fit `form` only on d <= `max_d`, then compare its prediction at the largest measured d
    with the measurement there (paper Fig. 26)."""
    d, gold = np.asarray(d, float), np.asarray(gold, float)
    left = (d > 0) & (d <= max_d)
    if left.sum() < 3 or d.max() <= max_d:
        return {"alpha": np.nan, "beta": np.nan, "fit_points": int(left.sum()), "d_last": float(d.max()),
                "gold_last": float(gold[np.argmax(d)]), "gold_pred_last": np.nan, "error_last": np.nan}
    f = fit_curve(form, d[left], gold[left])
    i = int(np.argmax(d))
    pred = float(predict(form, [d[i]], f["alpha"], f["beta"])[0])
    return {"alpha": f["alpha"], "beta": f["beta"], "fit_points": int(left.sum()), "d_last": float(d[i]),
            "gold_last": float(gold[i]), "gold_pred_last": pred, "error_last": pred - float(gold[i])}
