"""`results/summary.md`: the run's headline numbers as Markdown tables, written from its own files.

Everything the README quotes comes from here: the findings, the proxies' validation accuracy,
the best-of-n and RL seed means, the coefficient slopes, and the job time by rule. Nothing is
typed in; rerun the workflow and the file follows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else floats.format(v)
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _size(n) -> str:
    return f"{n / 1e3:.3g}k" if n < 1e6 else f"{n / 1e6:.3g}M"


def proxy_kind(rm: pd.DataFrame) -> str:
    """Which proxy architecture the run's proxies have, read from their metrics."""
    readout = rm["base_loglik_weight"].notna().any() if "base_loglik_weight" in rm else False
    return ("the readout proxy (LM + scalar head + a capped readout of its base's likelihood)" if readout
            else "the paper's proxy (LM + scalar head)")


def proxies_table(rm: pd.DataFrame) -> pd.DataFrame:
    g = rm.groupby(["policy", "rm", "params", "data"], as_index=False).agg(
        seeds=("seed", "nunique"), val_acc=("val_acc", "mean"), val_loss=("val_loss", "mean"),
        readout_c=("base_loglik_weight", "mean"), readout_cap=("base_loglik_cap", "mean"))
    g["params"] = g["params"].map(_size)
    return g


def bon_table(fits: pd.DataFrame) -> pd.DataFrame:
    g = fits.groupby(["policy", "rm", "rm_params", "data"], as_index=False).agg(
        seeds=("seed", "nunique"), gold_max=("gold_max", "mean"), d_at_max=("d_at_max", "mean"),
        gold_end=("gold_end", "mean"), d_end=("d_end", "mean"), alpha=("alpha", "mean"), beta=("beta", "mean"),
        r2=("r2", "mean"))
    g["rm_params"] = g["rm_params"].map(_size)
    return g.rename(columns={"rm_params": "params"})


def rl_table(fits: pd.DataFrame) -> pd.DataFrame:
    g = fits.groupby(["policy", "rm", "rm_params", "data", "kl_penalty"], as_index=False).agg(
        seeds=("seed", "nunique"), gold_max=("gold_max", "mean"), d_at_max=("d_at_max", "mean"),
        gold_end=("gold_end", "mean"), d_end=("d_end", "mean"), r2=("r2", "mean"))
    g["rm_params"] = g["rm_params"].map(_size)
    return g.rename(columns={"rm_params": "params"})


def scaling_rows(scaling: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("method", "policy", "data", "kl_penalty") if c in scaling]
    return scaling[keys + ["coefficient", "slope", "slope_lo", "slope_hi", "n_sizes"]]


def timing_table(benchmarks: list[tuple[str, str]]) -> pd.DataFrame:
    """Job wall seconds by group of jobs, from (group, `benchmark:` file) pairs. The files'
    `cpu_time` is left out: Snakemake samples it every 0.5 s for a job's first 15 s and every
    30 s after, so a job's CPU time after its last sample is lost (the gold on one pool of the
    default study: 36.4 s of CPU by /usr/bin/time, 14.9 s in its benchmark file)."""
    rows = []
    for group, f in benchmarks:
        values = Path(f).read_text().splitlines()[1].split("\t")
        rows.append({"rule": group, "s": float(values[0])})
    df = pd.DataFrame(rows, columns=["rule", "s"])
    g = df.groupby("rule", as_index=False).agg(jobs=("s", "size"), job_seconds=("s", "sum"), longest=("s", "max"))
    g = g.sort_values("job_seconds", ascending=False)
    total = pd.DataFrame([{"rule": "all", "jobs": int(g["jobs"].sum()), "job_seconds": g["job_seconds"].sum(),
                           "longest": g["longest"].max() if len(g) else np.nan}])
    return pd.concat([g, total], ignore_index=True)


def write_summary(out: str, findings: str, rm_metrics: str, bon_fits: str | None, rl_fits: str | None,
                  scaling: str | None, benchmarks: list[str]) -> str:
    from .util import atomic_file

    lines = Path(findings).read_text().splitlines()
    count = lambda status: sum(line.split(maxsplit=1)[0] == status for line in lines if line.strip())
    rm = pd.read_csv(rm_metrics)
    parts = ["# Summary of the run", "",
             f"Findings (docs/findings.md) with {proxy_kind(rm)}: **{count('PASS')} PASS / {count('FAIL')} FAIL / "
             f"{count('INCONCLUSIVE')} INCONCLUSIVE / {count('SKIP')} not testable** (`findings.txt`).",
             "", "```", *lines, "```", "",
             "## Proxies (seed means; `tables/rm_metrics.csv`)", "", _table(proxies_table(rm))]
    if bon_fits:
        parts += ["", "## Best-of-n (seed means of per-seed fits; `fits/bon.csv`)", "",
                  _table(bon_table(pd.read_csv(bon_fits)))]
    if rl_fits:
        parts += ["", "## RL (seed means; `fits/rl.csv`)", "", _table(rl_table(pd.read_csv(rl_fits)))]
    if scaling:
        parts += ["", "## Coefficients against log10 RM params (slope per decade, 95% interval; `fits/scaling.csv`)", "",
                  _table(scaling_rows(pd.read_csv(scaling)))]
    t = timing_table([tuple(b.split("=", 1)) for b in benchmarks])
    parts += ["", "## Job time by rule (wall seconds, `benchmarks/`)", "", _table(t, "{:.0f}")]
    text = "\n".join(parts) + "\n"
    with atomic_file(out) as tmp:
        Path(tmp).write_text(text)
    return text
