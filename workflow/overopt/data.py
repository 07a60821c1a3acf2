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


class CharCodec:
    """The character tokenizer above as table lookups: the same ids as `tokenizer(texts,
    add_special_tokens=False)` and the same text as `batch_decode(ids, skip_special_tokens=True)`.

    The tokenizers library runs its pre-tokenizer regex, model and Python-side encoding objects
    per text: 2-4 s for a best-of-n pool of 65k texts, longer than a small proxy's whole forward
    pass (measured). A text holding a line break (the split regex does not match one) or a special
    token's string is left to the tokenizer, so ids never differ."""

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.unk = vocab[UNK]
        self.specials = [t for t in SPECIALS if t in vocab]
        chars = {t: i for t, i in vocab.items() if len(t) == 1}
        self.table = np.full(max(map(ord, chars)) + 1, self.unk, dtype=np.int64)  # code point -> id
        self.codes = np.zeros(len(vocab), dtype=np.uint32)  # id -> code point; 0 marks a special token
        for c, i in chars.items():
            self.table[ord(c)], self.codes[i] = i, ord(c)
        self.tokenizer = tokenizer

    @staticmethod
    def of(tokenizer) -> "CharCodec | None":
        """A codec when `tokenizer` is the tiny world's character tokenizer, else None."""
        import json

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        cached = getattr(tokenizer, "_overopt_codec", False)
        if cached is not False:
            return cached
        spec = json.loads(backend.to_str())
        pre = spec.get("pre_tokenizer") or {}
        codec = None
        if (spec.get("normalizer") is None and spec["model"].get("type") == "WordLevel"
                and spec["model"].get("unk_token") == UNK and pre.get("type") == "Split"
                and pre.get("pattern") == {"Regex": "."} and pre.get("behavior") == "Isolated"
                and not pre.get("invert") and (spec.get("decoder") or {}).get("type") == "Fuse"):
            codec = CharCodec(tokenizer)
        tokenizer._overopt_codec = codec
        return codec

    def encode(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(texts)
        fast, slow = [], []
        for i, t in enumerate(texts):
            tricky = "\n" in t or "\r" in t or any(s in t for s in self.specials)
            (slow if tricky else fast).append(i)
        if slow:
            for i, ids in zip(slow, self.tokenizer([texts[i] for i in slow], add_special_tokens=False)["input_ids"]):
                out[i] = ids
        if fast:
            joined = "".join(texts[i] for i in fast)
            codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
            ids = np.where(codes < len(self.table), self.table[np.minimum(codes, len(self.table) - 1)], self.unk)
            ends = np.cumsum([len(texts[i]) for i in fast])
            for i, piece in zip(fast, np.split(ids, ends[:-1])):
                out[i] = piece.tolist()
        return out  # type: ignore[return-value]

    def decode(self, ids) -> list[str]:
        """Rows of ids (a 2-D array or tensor) as text, special tokens dropped."""
        codes = self.codes[np.asarray(ids, dtype=np.int64)]
        if codes.ndim != 2 or codes.shape[1] == 0:
            return ["".join(chr(c) for c in row if c) for row in codes]
        # fixed-width unicode rows: a trailing 0 (special token) is dropped by numpy, an inner one
        # is not, so rows with an inner special token are joined one by one
        text = np.ascontiguousarray(codes).view(f"<U{codes.shape[1]}")[:, 0].tolist()
        zero = codes == 0
        inner = np.flatnonzero((zero[:, :-1] & ~zero[:, 1:]).any(1))
        for r in inner:
            text[r] = "".join(chr(c) for c in codes[r] if c)
        return text


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens: `tokenizer(texts, add_special_tokens=False)`."""
    codec = CharCodec.of(tokenizer)
    if codec is not None:
        return codec.encode(list(texts))
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []


def decode_ids(tokenizer, ids) -> list[str]:
    """`tokenizer.batch_decode(ids, skip_special_tokens=True)`, fast for the character tokenizer."""
    codec = CharCodec.of(tokenizer)
    if codec is not None:
        return codec.decode(ids.cpu() if hasattr(ids, "cpu") else ids)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def pad_ids(rows: list[list[int]], pad: int):
    """Right-padded (B, T) input ids and their attention mask, as the tokenizer pads a batch."""
    import torch

    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def split_at_prompts(tokenizer, prompts: list[str], completions: list[str]):
    """Completions grouped by prompt, for models that run each prompt once and reuse it.

    Returns ([(prompt ids, indices, completion ids), ...], indices of the rest). A completion's
    ids are what follows its prompt's own ids in the joined text's tokenization, so a model that
    reuses the prompt sees exactly the joined text's tokens. A completion is left to the rest
    (to be scored on the joined text) when that tokenization does not begin with the prompt's
    own (BPE merges across the boundary), or adds no token to it."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    p_ids = dict(zip(groups, encode_texts(tokenizer, list(groups))))
    joined = encode_texts(tokenizer, [p + c for p, c in zip(prompts, completions)])
    out, rest = [], []
    for prompt, idx in groups.items():
        pi, n = p_ids[prompt], len(p_ids[prompt])
        ok, comps = [], []
        for i in idx:
            j = joined[i]
            if n and len(j) > n and j[:n] == pi:
                ok.append(i)
                comps.append(j[n:])
            else:
                rest.append(i)
        if ok:
            out.append((pi, np.array(ok), comps))
    return out, np.array(rest, dtype=np.int64)


def prompt_batches(groups, rows: int):
    """`split_at_prompts` groups as batches of at most `rows` completions whose prompts share one
    token length: (prompt ids (P, Tp) as lists, owner (B,): each row's prompt among them,
    completion ids (B lists), indices (B,)). Many completions of one prompt (a pool) give batches
    of that prompt alone; a few of many prompts (a PPO evaluation: 8 each) share a batch, so that
    the model runs once for them all instead of once per prompt."""
    by_len: dict[int, list] = {}
    for g in groups:
        by_len.setdefault(len(g[0]), []).append(g)
    for _, gs in sorted(by_len.items()):
        ps, owner, comps, idx = [], [], [], []
        for p_ids, g_idx, g_comps in gs:
            start = 0
            while start < len(g_idx):
                take = min(rows - len(idx), len(g_idx) - start)
                ps.append(p_ids)
                owner += [len(ps) - 1] * take
                comps += g_comps[start : start + take]
                idx += list(g_idx[start : start + take])
                start += take
                if len(idx) == rows:
                    yield ps, np.array(owner), comps, np.array(idx)
                    ps, owner, comps, idx = [], [], [], []
        if idx:
            yield ps, np.array(owner), comps, np.array(idx)


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


PAIRS_META = b"overopt"  # parquet metadata of a pairs file: the label draw's generator state


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
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import training_prompts
    from .util import atomic_file, seed_everything

    seed_everything(seed, threads)
    rng = np.random.default_rng(seed)
    n = train_pairs + val_pairs
    prompts = training_prompts(prompt_file, n, prompt_chars, rng)
    tok = load_tokenizer(policy_dir)
    both = sample_texts(load_causal(policy_dir), tok, prompts + prompts, completion_tokens, batch_size, seed)
    df = pd.DataFrame({"pair_id": np.arange(n), "prompt": prompts, "completion_a": both[:n], "completion_b": both[n:]})
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {"rng": rng.bit_generator.state, "train_pairs": train_pairs, "val_pairs": val_pairs}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PAIRS_META: json.dumps(meta).encode()})
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)


def label_pairs(pairs: str, gold_dir: str, out: str, label_noise: float, threads: int) -> dict:
    """The pairs labelled by the gold (the gold-preferred completion wins), split train/validation."""
    import json

    import pyarrow.parquet as pq

    from .gold import load_gold
    from .util import atomic_file, log, seed_everything, write_json

    seed_everything(0, threads)
    meta = json.loads(pq.read_schema(pairs).metadata[PAIRS_META])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    df = pd.read_parquet(pairs)
    prompts, a, b = df["prompt"].tolist(), df["completion_a"].tolist(), df["completion_b"].tolist()
    gold = load_gold(gold_dir)
    ga, gb = gold.score(prompts, a), gold.score(prompts, b)
    df = make_pairs(prompts, a, b, ga, gb, meta["val_pairs"], label_noise, rng)
    # gold is standardised per policy: mean 0, std 1 over this policy's samples
    g = np.concatenate([ga, gb])
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
