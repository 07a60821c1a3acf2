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
    label = np.where(gold_a == gold_b, rng.integers(0, 2, len(gold_a)), gold_a > gold_b).astype(np.int8)
    n = len(prompts)
    if not 0 < n_val < n:
        raise ValueError(f"validation size {n_val} must be between 1 and the number of pairs ({n})")
    split = np.array(["train"] * (n - n_val) + ["val"] * n_val)
    noisy = label.copy()
    tr = split == "train"
    noisy[tr] = flip_labels(label[tr], label_noise, rng)
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


def label_pairs(pairs: str, gold_dir: str, out: str, label_noise: float, threads: int) -> dict:
    """The pairs labelled by the gold (the gold-preferred completion wins), split train/validation."""
    from .gold import load_gold
    from .keys import pairs_metadata
    from .util import atomic_file, log, seed_everything, write_json

    seed_everything(0, threads)
    meta = pairs_metadata(pairs)
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    df = pd.read_parquet(pairs)
    prompts, a, b = df["prompt"].tolist(), df["completion_a"].tolist(), df["completion_b"].tolist()
    gold = load_gold(gold_dir)
    # both completions of a pair in one call: scorers that reuse a prompt run it once for the two
    g = gold.score(prompts + prompts, a + b)
    ga, gb = np.split(g, 2)
    df = make_pairs(prompts, a, b, ga, gb, meta["val_pairs"], label_noise, rng)
    # gold is standardised per policy: mean 0, std 1 over this policy's samples
    norm = {"gold_mean": float(g.mean()), "gold_std": float(g.std())}
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
