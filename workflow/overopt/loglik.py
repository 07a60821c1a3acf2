"""Completion log-likelihoods under a frozen LM base, computed once per (text set, base).

A proxy's base-likelihood readout reads its own frozen base, and every proxy of one base (each
seed, each data size) reads the same texts: the comparison pairs it trains on and the pool it
scores. These tables hold that number once, keyed by the rows' own ids, so that training and
scoring look it up instead of running the base again per proxy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def batch_size() -> int:
    """One batch size for every caller, so that a table and an in-job computation batch alike."""
    from .batches import LOGLIK, rows

    return rows(LOGLIK)


class FrozenLM:
    """A base LM and its tokenizer, frozen: mean log-likelihood per token of completions."""

    def __init__(self, lm_dir: str):
        from .models import load_causal, load_tokenizer

        from .templates import template_of

        self.tok = load_tokenizer(lm_dir)
        self.lm = load_causal(lm_dir, frozen=True).eval().requires_grad_(False)
        self.template = template_of(lm_dir)

    def reads(self, df, completions=("completion",)):
        """A table of raw texts as this base reads them (its `template`)."""
        from .templates import render_frame

        return render_frame(self.tok, self.template, df, completions)

    def __call__(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        from .models import completion_logprobs

        return completion_logprobs(self.lm, self.tok, prompts, completions, batch_size=batch_size())


def pairs_table(lm_dir: str, comparisons: str, out: str, threads: int = 1, train_pairs: int | None = None) -> None:
    """Both completions of the comparison pairs, keyed by pair_id: with `train_pairs` (the
    largest data size of this base's proxies), the first `train_pairs` training pairs and every
    validation pair of a pairs file (`comparisons.sample_pairs`), the only ones those proxies
    read; without it, every pair. A pair's numbers do not depend on which others are in the table."""
    from .util import atomic_file, seed_everything

    seed_everything(0, threads)
    lm = FrozenLM(lm_dir)
    df = pd.read_parquet(comparisons, columns=["pair_id", "prompt", "completion_a", "completion_b"])
    if train_pairs is not None:
        from .keys import pairs_metadata

        n_train = pairs_metadata(comparisons)["train_pairs"]
        if train_pairs > n_train:
            raise ValueError(f"{comparisons}: {n_train} training pairs, {train_pairs} asked for")
        ids = df["pair_id"].to_numpy()
        df = df[(ids < train_pairs) | (ids >= n_train)]
    df = lm.reads(df, ("completion_a", "completion_b"))
    prompts = df["prompt"].tolist()
    res = pd.DataFrame({"pair_id": df["pair_id"].to_numpy(),
                        "loglik_a": lm(prompts, df["completion_a"].tolist()),
                        "loglik_b": lm(prompts, df["completion_b"].tolist())})
    with atomic_file(out) as tmp:
        res.to_parquet(tmp, index=False)


def pool_table(lm_dir: str, pool: str, out: str, threads: int = 1) -> None:
    """Every sample of a best-of-n pool, keyed by (prompt_id, sample_id)."""
    from .util import atomic_file, seed_everything

    seed_everything(0, threads)
    lm = FrozenLM(lm_dir)
    df = lm.reads(pd.read_parquet(pool, columns=["prompt_id", "sample_id", "prompt", "completion"]))
    res = df[["prompt_id", "sample_id"]].assign(loglik=lm(df["prompt"].tolist(), df["completion"].tolist()))
    with atomic_file(out) as tmp:
        res.to_parquet(tmp, index=False)


def pair_logliks(table: str, df: pd.DataFrame, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chosen and the rejected completion's log-likelihood for the pairs of `df`, from a table."""
    t = pd.read_parquet(table).set_index("pair_id")
    missing = np.setdiff1d(df["pair_id"].to_numpy(), t.index.to_numpy())
    if len(missing):
        raise ValueError(f"{table}: no log-likelihood for {len(missing)} pairs (e.g. pair_id {missing[0]}): "
                         "made from other comparisons, or for fewer training pairs")
    t = t.loc[df["pair_id"].to_numpy()]
    a, b = t["loglik_a"].to_numpy(), t["loglik_b"].to_numpy()
    return np.where(label == 1, a, b), np.where(label == 1, b, a)


def pool_logliks(table: str, df: pd.DataFrame) -> np.ndarray:
    """The log-likelihood of each row of a pool table `df`, in its order, from a table."""
    t = pd.read_parquet(table)
    got = df[["prompt_id", "sample_id"]].merge(t, how="left", on=["prompt_id", "sample_id"])
    if got["loglik"].isna().any():
        raise ValueError(f"{table}: rows of the pool missing: made from another pool")
    return got["loglik"].to_numpy()
