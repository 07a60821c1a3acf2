"""The comparison data set: pairs of pi_init completions labelled by the gold, label noise, the
train/validation split and the nested training subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def flip_labels(label: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Flip each hard label (1 = first completion preferred) with probability `noise`."""
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {noise}")
    flips = rng.random(len(label)) < noise
    return np.where(flips, 1 - label, label).astype(np.int8)


def draw_labels(gold_a: np.ndarray, gold_b: np.ndarray, n_val: int, label_noise: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gold label, training label) of every pair: the gold-preferred completion wins, ties broken
    at random, label noise on the training split only (the first len - n_val pairs). The draws are
    one per pair whatever its gold, so the pairs of a part labelled alone (the others' gold NaN)
    get the labels a labelling of every pair gives them."""
    label = np.where(gold_a == gold_b, rng.integers(0, 2, len(gold_a)), gold_a > gold_b).astype(np.int8)
    n = len(gold_a)
    if not 0 < n_val < n:
        raise ValueError(f"validation size {n_val} must be between 1 and the number of pairs ({n})")
    noisy = label.copy()
    noisy[: n - n_val] = flip_labels(label[: n - n_val], label_noise, rng)
    return label, noisy


def make_pairs(
    prompts: list[str],
    completions_a: list[str],
    completions_b: list[str],
    gold_a: np.ndarray,
    gold_b: np.ndarray,
    n_val: int,
    label_noise: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Label pairs by gold (the gold-preferred completion wins) and split train/validation.

    Ties in gold are broken at random. Label noise is applied to the training split only,
    so validation accuracy measures agreement with the gold itself.
    """
    gold_a, gold_b = np.asarray(gold_a, float), np.asarray(gold_b, float)
    label, noisy = draw_labels(gold_a, gold_b, n_val, label_noise, rng)
    n = len(prompts)
    split = np.array(["train"] * (n - n_val) + ["val"] * n_val)
    df = pd.DataFrame(
        {
            "pair_id": np.arange(n),
            "split": split,
            "prompt": prompts,
            "completion_a": completions_a,
            "completion_b": completions_b,
            "gold_a": gold_a,
            "gold_b": gold_b,
            "gold_label": label,
            "label": noisy,
        }
    )
    return df


def sample_pairs(
    policy_dir: str,
    out: str,
    train_pairs: int,
    val_pairs: int,
    prompt_chars: int,
    completion_tokens: int,
    batch_size: int,
    seed: int,
    threads: int,
    prompt_file: str | None = None,
) -> None:
    """Two pi_init completions of each training prompt, unlabelled: the half of the comparison
    set that needs only the policy, so that it is ready (and its base log-likelihoods too) by the
    time the gold is. The generator that drew the prompts is saved with the pairs, and labelling
    continues from it: the labelled set is what one job drawing both halves would make."""
    from .keys import write_table
    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import training_prompts
    from .templates import render_prompts, template_of
    from .util import seed_everything

    seed_everything(seed, threads)
    rng = np.random.default_rng(seed)
    n = train_pairs + val_pairs
    prompts = training_prompts(prompt_file, n, prompt_chars, rng)
    tok = load_tokenizer(policy_dir)
    asked = render_prompts(tok, template_of(policy_dir), prompts)  # the policy's own template; pairs keep raw prompts
    both = sample_texts(load_causal(policy_dir), tok, asked + asked, completion_tokens, batch_size, seed)
    df = pd.DataFrame({"pair_id": np.arange(n), "prompt": prompts, "completion_a": both[:n], "completion_b": both[n:]})
    write_table(df, out, {"rng": rng.bit_generator.state, "train_pairs": train_pairs, "val_pairs": val_pairs})


def label_pairs(pairs: str, gold_dir: str, out: str, label_noise: float, threads: int,
                rows: list[tuple[int, int]] | None = None) -> dict | None:
    """The pairs labelled by the gold (the gold-preferred completion wins), split train/validation,
    with the gold standardised over every pair. `rows`: only the pairs of these pair-id ranges, a
    part (`config.label_parts`) that `merge_parts` joins, with the gold unstandardised."""
    from .gold import load_gold
    from .keys import pairs_metadata, write_table
    from .util import seed_everything

    seed_everything(0, threads)
    meta = pairs_metadata(pairs)
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    df = pd.read_parquet(pairs)
    n = len(df)
    idx = np.arange(n) if rows is None else np.concatenate([np.arange(lo, hi) for lo, hi in rows])
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n or len(np.unique(idx)) < len(idx):
        raise ValueError(f"{pairs}: pair ranges {rows} are not distinct pairs of its {n}")
    prompts = df["prompt"].to_numpy()[idx].tolist()
    a, b = df["completion_a"].to_numpy()[idx].tolist(), df["completion_b"].to_numpy()[idx].tolist()
    # both completions of a pair in one call: scorers that reuse a prompt run it once for the two
    ga, gb = np.split(load_gold(gold_dir).score(prompts + prompts, a + b), 2)
    gold_a, gold_b = np.full(n, np.nan), np.full(n, np.nan)
    gold_a[idx], gold_b[idx] = ga, gb
    labelled = make_pairs(df["prompt"].tolist(), df["completion_a"].tolist(), df["completion_b"].tolist(),
                          gold_a, gold_b, meta["val_pairs"], label_noise, rng).iloc[idx]
    part = labelled.rename(columns={"gold_a": "gold_a_raw", "gold_b": "gold_b_raw"}).reset_index(drop=True)
    if rows is None:
        return write_comparisons(part, meta, label_noise, out)
    # the pairs' own generator state names the sample they come from: parts of two samples do not join
    write_table(part, out, {"train_pairs": meta["train_pairs"], "val_pairs": meta["val_pairs"], "label_noise": label_noise,
                            "pairs_rng": meta["rng"]})
    return None


def merge_parts(parts: list[str], out: str) -> dict:
    """The labelled set from its parts (`label_pairs` with `rows`), the same file one job labelling
    every pair writes; refused unless the parts hold every pair once, of one pairs file."""
    from .keys import labels_metadata, read_comparisons

    metas = [labels_metadata(f) for f in parts]
    if any(m != metas[0] for m in metas):
        raise ValueError(f"{parts[0]}: parts of different comparison sets: {metas[0]} and "
                         f"{next(m for m in metas if m != metas[0])}")
    df = read_comparisons(parts)
    if not np.array_equal(df["pair_id"].to_numpy(), np.arange(metas[0]["train_pairs"] + metas[0]["val_pairs"])):
        raise ValueError(f"{parts[0]}: the parts {parts} do not hold every pair exactly once")
    return write_comparisons(df, metas[0], metas[0]["label_noise"], out)


def write_comparisons(df: pd.DataFrame, meta: dict, label_noise: float, out: str) -> dict:
    """Every labelled pair with its gold standardised per policy (mean 0, std 1 over this policy's
    samples), and the set's statistics beside it (.json)."""
    from .util import atomic_file, log, write_json

    g = np.concatenate([df["gold_a_raw"].to_numpy(), df["gold_b_raw"].to_numpy()])
    norm = {"gold_mean": float(g.mean()), "gold_std": float(g.std())}
    df = df.rename(columns={"gold_a_raw": "gold_a", "gold_b_raw": "gold_b"})
    df["gold_a"] = (df["gold_a"] - norm["gold_mean"]) / norm["gold_std"]
    df["gold_b"] = (df["gold_b"] - norm["gold_mean"]) / norm["gold_std"]
    df.attrs.clear()
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
    n = meta["train_pairs"] + meta["val_pairs"]
    stats = {**norm, "pairs": n, "train_pairs": meta["train_pairs"], "val_pairs": meta["val_pairs"],
             "label_noise": label_noise, "flipped": int((df["label"] != df["gold_label"]).sum())}
    write_json(stats, Path(out).with_suffix(".json"))
    log.info("comparisons: %s", stats)
    return stats
