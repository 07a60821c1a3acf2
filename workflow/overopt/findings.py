"""The findings check: every finding of docs/findings.md that the grid can test, one line each,
PASS, FAIL, INCONCLUSIVE or SKIP (not testable on this grid), with its cluster-bootstrap
interval and the number of replicates it holds in (`protocol`), then the sanity checks.
This module gathers the tables; `protocol` holds the statistics and thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .keys import main_policy


def load(bon_fits: str | None = None, scores=(), rl_fits: str | None = None, rl_runs=(), rl_by_prompt=()) -> dict:
    """The tables the findings read: fit tables (sizes and losses of the proxies), best-of-n
    scores files ({keys: path}, from their metadata), PPO runs and their per-prompt evaluations
    (keys in their columns)."""
    from .keys import key_tuple, load_curves, scores_metadata

    return {"bon_fits": pd.read_csv(bon_fits) if bon_fits else None,
            "scores": {key_tuple(scores_metadata(f)["keys"]): f for f in scores},
            "rl_fits": pd.read_csv(rl_fits) if rl_fits else None,
            "rl_runs": load_curves(list(rl_runs)) if len(rl_runs) else None,
            "rl_by_prompt": load_curves(list(rl_by_prompt)) if len(rl_by_prompt) else None}


def seed_mean_curves(curves: pd.DataFrame, key: str) -> dict:
    """{(policy, rm_params, data[, kl_penalty]): DataFrame of d, gold, gold_se, proxy} averaged over seeds."""
    keys = ["policy", "rm_params", "data"] + (["kl_penalty"] if "kl_penalty" in curves else [])
    out = {}
    for k, g in curves.groupby(keys):
        seeds = g["seed"].nunique()
        m = g.groupby(key).agg(d=("d", "mean"), gold=("gold", "mean"), proxy=("proxy", "mean"),
                               gold_se=("gold_se", lambda s: float(np.sqrt(np.mean(np.square(s))) / np.sqrt(seeds))))
        out[k] = m.reset_index().sort_values("d")
    return out


def check(data: dict, loss_n: int = 64, policy_params: dict | None = None, B: int = 1000, seed: int = 0,
          workers: int = 1) -> list:
    """The protocol's findings on `load`'s tables (in `workers` processes), then the sanity checks."""
    from .protocol import Result, bon_cells, findings, rl_cells

    bon_fits, rl_fits = data["bon_fits"], data["rl_fits"]
    if bon_fits is None and rl_fits is None:
        return [Result("-", "results", "FAIL", "no fit table given")]
    bon = bon_cells(bon_fits, data["scores"]) if bon_fits is not None else {}
    rl = {}
    if rl_fits is not None:
        if data["rl_runs"] is None or data["rl_by_prompt"] is None:
            raise ValueError("an RL fit table needs its runs and their per-prompt evaluations (--rl-runs, --rl-by-prompt)")
        rl = rl_cells(rl_fits, data["rl_runs"], data["rl_by_prompt"])
    main = main_policy(bon_fits if bon_fits is not None else rl_fits)
    rl_min_d = float(rl_fits["fit_min_d"].iloc[0]) if rl_fits is not None and "fit_min_d" in rl_fits else 0.0
    return findings(bon, rl, main, loss_n, rl_min_d, dict(policy_params or {}), B, seed, workers) + sanity(data)


def sanity(data: dict) -> list:
    """Checks that cannot fail when the code is right (docs/findings.md): reported, never counted."""
    from .protocol import Result

    out = []
    fits = data["bon_fits"]
    if fits is not None:
        mono = int(fits["proxy_monotone"].sum())
        out.append(Result("S1", "best-of-n proxy rises with n", "OK" if mono == len(fits) else "BAD",
                          f"{mono}/{len(fits)} curves"))
    return out
