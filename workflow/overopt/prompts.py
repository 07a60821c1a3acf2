"""Prompts from a file (real scale): read once, cut to length, split train / held-out.

The table `prompts.parquet` (columns `prompt`, `split`) is written by one job and read by every
consumer, so comparisons, PPO and the best-of-n pool agree on which prompts are held out. The
split is a seeded shuffle: the first `heldout` prompts are held out, the rest train. Held-out
prompts come first in the shuffled order, so the pool's first P prompts are the same for any P.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd


def read_prompt_file(path: str | Path, column: str) -> list[str]:
    path = Path(path)
    if path.suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: prompts must be .jsonl or .parquet")
    if column not in df.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(map(str, df.columns))})")
    return df[column].astype(str).tolist()


def cut(prompt: str, max_chars: int) -> str:
    """At most `max_chars` characters, cut after the last whole word that fits."""
    prompt = re.sub(r"\s+", " ", prompt).strip()
    if len(prompt) <= max_chars:
        return prompt
    head = prompt[: max_chars + 1]
    return head[: head.rfind(" ")] if " " in head else prompt[:max_chars]


def split_prompts(prompts: list[str], heldout: int, seed: int, max_chars: int) -> pd.DataFrame:
    """Deduplicated, cut prompts in a seeded order; the first `heldout` are held out."""
    uniq = list(dict.fromkeys(p for p in (cut(p, max_chars) for p in prompts) if p))
    if heldout >= len(uniq):
        raise ValueError(f"heldout ({heldout}) must be below the number of distinct prompts ({len(uniq)})")
    order = np.random.default_rng(seed).permutation(len(uniq))
    return pd.DataFrame({"prompt": [uniq[i] for i in order],
                         "split": ["heldout"] * heldout + ["train"] * (len(uniq) - heldout)})


def write_prompt_table(path: str, column: str, heldout: int, seed: int, max_chars: int, out: str) -> None:
    from .util import atomic_file, log

    df = split_prompts(read_prompt_file(path, column), heldout, seed, max_chars)
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("prompts: %d train, %d held out", (df["split"] == "train").sum(), heldout)


def prompt_split(table: str, split: str) -> list[str]:
    df = pd.read_parquet(table)
    return df.loc[df["split"] == split, "prompt"].tolist()


def training_prompts(table: str | None, n: int, prompt_chars: int, rng: np.random.Generator) -> list[str]:
    """`n` training prompts: drawn from the file's training split, or the tiny world's corpus windows."""
    if table is None:
        from .text import corpus_split, random_prompts

        return random_prompts(corpus_split()[0], n, prompt_chars, rng)
    train = prompt_split(table, "train")
    return [train[i] for i in rng.choice(len(train), size=n, replace=len(train) < n)]


def heldout_prompts(table: str | None, n: int, prompt_chars: int, rng: np.random.Generator, offset: int = 0) -> list[str]:
    """`n` held-out prompts: the file's held out from `offset` on, or corpus windows from held-out topics."""
    if table is None:
        from .text import corpus_split, random_prompts

        return random_prompts(corpus_split()[1], n, prompt_chars, rng)
    held = prompt_split(table, "heldout")
    if offset + n > len(held):
        raise ValueError(f"{table}: {len(held)} held-out prompts, {offset + n} asked (bon.prompts x replicates): "
                         "raise world.prompts.heldout or set replicates.pool: false")
    return held[offset : offset + n]


def ppo_prompts(table: str | None, prompt_chars: int, seed: int) -> list[str]:
    """PPO's training prompts: the file's whole training split, or 20,000 corpus windows drawn
    with the run's seed (the pool's prompts come from held-out topics)."""
    if table is not None:
        return prompt_split(table, "train")
    from .text import corpus_split, random_prompts

    return random_prompts(corpus_split()[0], 20000, prompt_chars, np.random.default_rng(seed + 1000))
