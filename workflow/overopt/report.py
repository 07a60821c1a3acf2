"""Aggregate tables that later figures and the README read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .util import atomic_file

RM_PATH = re.compile(r"rm/(?P<policy>[^/]+)/(?P<rm>[^/]+)/n(?P<data>\d+)/s(?P<seed>\d+)/metrics\.json$")


def rm_table(metrics_paths: list[str], out: str) -> pd.DataFrame:
    """One row per proxy RM, its grid coordinates parsed from its path."""
    rows = []
    for p in metrics_paths:
        m = RM_PATH.search(Path(p).as_posix())
        if m is None:
            raise ValueError(f"{p}: not a results/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}/metrics.json path")
        d = json.loads(Path(p).read_text())
        rows.append({"policy": m["policy"], "rm": m["rm"], "data": int(m["data"]), "seed": int(m["seed"]),
                     **{k: d[k] for k in ("params", "val_loss", "val_acc", "train_pairs", "seconds")},
                     # c of the base-likelihood readout; empty for a proxy scored by its head alone
                     "base_loglik_weight": d.get("base_loglik_weight", float("nan")),
                     # tau of its learned cap; empty where uncapped
                     "base_loglik_cap": d.get("base_loglik_cap") if d.get("base_loglik_cap") is not None else float("nan")})
    df = pd.DataFrame(rows).sort_values(["policy", "params", "data", "seed"]).reset_index(drop=True)
    with atomic_file(out) as tmp:
        df.to_csv(tmp, index=False)
    return df
