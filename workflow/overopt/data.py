"""The tiny world's text: corpus, tokenizer, prompts, and the comparison data set.

The corpus is CPython's own pydoc topics (~0.4 MB of English documentation), so the
default study needs no download. Whitespace is collapsed and text is kept ASCII so that a
character-level vocabulary of ~90 symbols covers it exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]


def corpus_topics() -> list[tuple[str, str]]:
    """(topic, normalised text) for every pydoc topic, in a fixed order."""
    import pydoc_data.topics as topics

    out = []
    for key in sorted(topics.topics):
        text = topics.topics[key].encode("ascii", "ignore").decode()
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            out.append((key, text))
    return out


def corpus_split(heldout_fraction: float = 0.1) -> tuple[str, str]:
    """Train and held-out text, split by whole topics so that ~`heldout_fraction` is held out.

    Splitting by topic (not by position) keeps held-out prompts about subjects the policy
    never saw verbatim, as the paper's held-out prompts are. A topic goes to the held-out
    part whenever that part is below its share so far, which is deterministic.
    """
    train, held = [], []
    n_train = n_held = 0
    for _, text in corpus_topics():
        if n_held < heldout_fraction * (n_train + n_held):
            held.append(text)
            n_held += len(text)
        else:
            train.append(text)
            n_train += len(text)
    return " ".join(train), " ".join(held)


def build_char_tokenizer(text: str):
    """A character-level Hugging Face tokenizer whose vocabulary is the corpus alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(set(text))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    hf.padding_side = "right"
    return hf


def random_prompts(text: str, n: int, prompt_chars: int, rng: np.random.Generator) -> list[str]:
    """`n` prompts: windows of `prompt_chars` characters that start at a word boundary."""
    starts = np.array([m.end() for m in re.finditer(r" ", text[: len(text) - prompt_chars - 1])])
    idx = rng.choice(len(starts), size=n, replace=len(starts) < n)
    return [text[s : s + prompt_chars] for s in starts[idx]]


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


def train_subset(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first `n` training pairs: data sizes are nested, so a larger set adds to a smaller one."""
    train = df[df["split"] == "train"]
    if n > len(train):
        raise ValueError(f"data size {n} exceeds the {len(train)} training comparisons available")
    return train.iloc[:n]


def chosen_rejected(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Full texts (prompt + completion) of the preferred and the other completion."""
    a = (df["prompt"] + df["completion_a"]).tolist()
    b = (df["prompt"] + df["completion_b"]).tolist()
    lab = df["label"].to_numpy()
    chosen = [x if l == 1 else y for x, y, l in zip(a, b, lab)]
    rejected = [y if l == 1 else x for x, y, l in zip(a, b, lab)]
    return chosen, rejected


def save_tokenizer(text: str, out: Path) -> None:
    build_char_tokenizer(text).save_pretrained(str(out))


def build_comparisons(
    policy_dir: str,
    gold_dir: str,
    out: str,
    train_pairs: int,
    val_pairs: int,
    prompt_chars: int,
    completion_tokens: int,
    label_noise: float,
    batch_size: int,
    seed: int,
    threads: int,
    prompt_file: str | None = None,
) -> dict:
    """Pairs of pi_init completions per training prompt, labelled by the gold.

    The policy samples in its own tokenizer; the gold scores the text (prompt + completion)."""
    from .gold import load_gold
    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import training_prompts
    from .util import atomic_file, log, seed_everything, write_json

    seed_everything(seed, threads)
    rng = np.random.default_rng(seed)
    n = train_pairs + val_pairs
    prompts = training_prompts(prompt_file, n, prompt_chars, rng)
    tok = load_tokenizer(policy_dir)
    policy = load_causal(policy_dir)
    both = sample_texts(policy, tok, prompts + prompts, completion_tokens, batch_size, seed)
    a, b = both[:n], both[n:]
    gold = load_gold(gold_dir)
    ga = gold.score(prompts, a)
    gb = gold.score(prompts, b)
    df = make_pairs(prompts, a, b, ga, gb, val_pairs, label_noise, rng)
    # gold is standardised per policy: mean 0, std 1 over this policy's samples
    g = np.concatenate([ga, gb])
    norm = {"gold_mean": float(g.mean()), "gold_std": float(g.std())}
    df["gold_a"] = (df["gold_a"] - norm["gold_mean"]) / norm["gold_std"]
    df["gold_b"] = (df["gold_b"] - norm["gold_mean"]) / norm["gold_std"]
    df.attrs.clear()
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
    stats = {**norm, "pairs": n, "train_pairs": train_pairs, "val_pairs": val_pairs,
             "label_noise": label_noise, "flipped": int((df["label"] != df["gold_label"]).sum())}
    write_json(stats, Path(out).with_suffix(".json"))
    log.info("comparisons: %s", stats)
    return stats
