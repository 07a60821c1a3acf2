"""Aggregate tables that later figures and the README read."""

from __future__ import annotations

import pandas as pd

from .keys import read_proxy_metrics
from .util import atomic_file


def rm_table(metrics_paths: list[str], out: str) -> pd.DataFrame:
    """One row per proxy RM, with the grid keys it recorded."""
    rows = []
    for p in metrics_paths:
        d = read_proxy_metrics(p)
        rows.append({**d["keys"],
                     **{k: d[k] for k in ("params", "val_loss", "val_acc", "train_pairs", "seconds")},
                     # c of the base-likelihood readout; empty for a proxy scored by its head alone
                     "base_loglik_weight": d.get("base_loglik_weight", float("nan")),
                     # tau of its learned cap; empty where uncapped
                     "base_loglik_cap": d.get("base_loglik_cap") if d.get("base_loglik_cap") is not None else float("nan")})
    df = pd.DataFrame(rows).sort_values(["policy", "params", "data", "seed"]).reset_index(drop=True)
    with atomic_file(out) as tmp:
        df.to_csv(tmp, index=False)
    return df
