"""The tiny world's text: corpus, character tokenizer and its fast codec, prompt windows.

The corpus is CPython's own pydoc topics (~0.4 MB of English documentation), so the
default study needs no download. Whitespace is collapsed and text is kept ASCII so that a
character-level vocabulary of ~90 symbols covers it exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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


def save_tokenizer(text: str, out: Path) -> None:
    build_char_tokenizer(text).save_pretrained(str(out))
