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
