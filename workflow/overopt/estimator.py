"""Best-of-n from one scored pool: the unbiased estimator (WebGPT App. I) and its analytic KL.
Tables in, curves out: nothing here loads a model.

For each prompt, N samples sorted by proxy score ascending, S_1..S_N. The sample at rank i
is the proxy-best of a uniformly random n-subset with probability C(i-1, n-1) / C(N, n), so
E[score of best-of-n] = sum_i w_{n,i} score(S_i). Every n <= N comes out of the same pool.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def bon_kl(n) -> np.ndarray:
    """KL(best-of-n || pi_init) = log n - (n-1)/n (exact for distinct samples)."""
    n = np.asarray(n, dtype=float)
    return np.log(n) - (n - 1) / n


def bon_weights(N: int, ns) -> np.ndarray:
    """(len(ns), N) matrix of C(i-1, n-1)/C(N, n) for ranks i = 1..N, in log space."""
    ns = np.asarray(ns, dtype=float)[:, None]
    i = np.arange(1, N + 1, dtype=float)[None, :]
    valid = i >= ns
    k = np.where(valid, i - ns, 0.0)  # keep gammaln's arguments positive where w = 0
    logw = gammaln(i) - gammaln(ns) - gammaln(k + 1) - (gammaln(N + 1) - gammaln(ns + 1) - gammaln(N - ns + 1))
    return np.where(valid, np.exp(logw), 0.0)


def n_grid(N: int, points_per_doubling: int = 4) -> np.ndarray:
    """Log-spaced integers from 1 to N inclusive."""
    k = int(np.ceil(np.log2(N) * points_per_doubling)) + 1
    return np.unique(np.round(np.logspace(0, np.log2(N), k, base=2)).astype(int).clip(1, N))


def _tie_average(sorted_key: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace values by their mean within runs of equal keys (per row).

    Best-of-n breaks a tie at random, so the selected member of a tied group is uniform
    over the group: its expected score is the group mean.
    """
    P, N = sorted_key.shape
    new_group = np.ones((P, N), dtype=bool)
    new_group[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    gid = np.cumsum(new_group.ravel()) - 1
    sums = np.bincount(gid, weights=values.ravel())
    counts = np.bincount(gid)
    return (sums / counts)[gid].reshape(P, N)


def bon_per_prompt(proxy: np.ndarray, gold: np.ndarray, ns) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt best-of-n estimates, shape (P, len(ns)), for gold and for proxy."""
    proxy = np.asarray(proxy, dtype=float)
    gold = np.asarray(gold, dtype=float)
    P, N = proxy.shape
    order = np.argsort(proxy, axis=1, kind="stable")
    sp = np.take_along_axis(proxy, order, axis=1)
    sg = _tie_average(sp, np.take_along_axis(gold, order, axis=1))
    W = bon_weights(N, ns)
    return sg @ W.T, sp @ W.T


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns=None):
    """The estimator averaged over prompts, with standard errors over prompts, as a DataFrame."""
    import pandas as pd

    P, N = proxy.shape
    ns = n_grid(N) if ns is None else np.asarray(ns)
    g, p = bon_per_prompt(proxy, gold, ns)
    se = lambda x: x.std(axis=0, ddof=1) / np.sqrt(P) if P > 1 else np.zeros(x.shape[1])
    kl = bon_kl(ns)
    return pd.DataFrame(
        {"n": ns, "kl": kl, "d": np.sqrt(kl), "gold": g.mean(0), "gold_se": se(g), "proxy": p.mean(0), "proxy_se": se(p)}
    )


def scores_matrix(df) -> tuple[np.ndarray, np.ndarray]:
    df = df.sort_values(["prompt_id", "sample_id"])
    P = df["prompt_id"].nunique()
    return df["proxy"].to_numpy().reshape(P, -1), df["gold"].to_numpy().reshape(P, -1)


def write_curve(scores: str, out: str) -> None:
    import pandas as pd

    from .keys import scores_metadata, with_keys
    from .util import atomic_file

    proxy, gold = scores_matrix(pd.read_parquet(scores))
    curve = with_keys(bon_curve(proxy, gold), scores_metadata(scores)["keys"])
    with atomic_file(out) as tmp:
        curve.to_csv(tmp, index=False)
