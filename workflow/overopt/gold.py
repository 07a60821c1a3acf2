"""The gold reward: one scoring interface, text in, one scalar per completion out.

`load_gold(dir)` returns an object with `.score(prompts, completions) -> np.ndarray`.
Downstream code never knows which kind of gold it holds, so the gold can change without
touching anything else:

- `kind: hf`: a Hugging Face reward model (sequence classification, num_labels=1), scored on
  its own tokenisation of prompt + completion.
- `kind: tiny`: the tiny world's gold, a transparent sum of named terms, each standardised on
  corpus text and weighted by config. Its structure is known on purpose: a researcher can
  score a proxy's favourite samples term by term and see which term it failed to learn.

Raw gold is re-centred per policy downstream (mean 0, std 1 on that policy's samples).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .models import completion_logprobs
from .util import atomic_dir, autocast, log, write_json


# --------------------------------------------------------------------------- tiny gold terms


class CharNGram:
    """A character n-gram LM with interpolated Witten-Bell smoothing, counted on corpus text.

    The tiny gold's fluency reference when `fluency_ngram` is set: a transformer reference
    (`reference:`) costs a pretraining run on the critical path and a forward pass per scored
    completion; counts give the same kind of judgement (is this text like the corpus?) from a
    table lookup. Stored as integer arrays in an .npz (loaded with allow_pickle=False).

    An n-gram of codes w_1..w_k is the integer sum w_i << bits*(k-i), so its context is
    key >> bits, every table is a sorted array and every lookup one `searchsorted`.
    """

    def __init__(self, alphabet: str, order: int, tables: dict[str, np.ndarray]):
        self.alphabet, self.order, self.t = alphabet, order, tables
        self.V = len(alphabet) + 1  # + one code for any character outside the corpus alphabet
        self.bits = int(np.ceil(np.log2(self.V + 1)))
        if self.bits * order > 62:
            raise ValueError(f"n-gram order {order} too high for an alphabet of {len(alphabet)}")
        # code of every code point up to the alphabet's largest; 0 = before the text starts
        points = np.array([ord(ch) for ch in alphabet], dtype=np.int64)
        self.table = np.full(int(points.max(initial=0)) + 2, self.V, dtype=np.int64)
        self.table[points] = np.arange(1, len(alphabet) + 1)

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        return self.table[np.minimum(points, len(self.table) - 1)]

    def _keys(self, codes: np.ndarray, k: int) -> np.ndarray:
        """Key of the k-gram ending at every position (positions before the start are code 0)."""
        padded = np.concatenate([np.zeros(k - 1, dtype=np.int64), codes])
        key = np.zeros(len(codes), dtype=np.int64)
        for i in range(k):
            key = (key << self.bits) | padded[i : i + len(codes)]
        return key

    @classmethod
    def fit(cls, text: str, order: int) -> "CharNGram":
        lm = cls("".join(sorted(set(text))), order, {})
        codes = lm.encode(text)
        t = {"unigram": np.bincount(codes, minlength=lm.V + 1).astype(np.int64)}
        for k in range(2, order + 1):
            keys, counts = np.unique(lm._keys(codes, k)[k - 1 :], return_counts=True)
            ctx, first = np.unique(keys >> lm.bits, return_index=True)
            t[f"keys{k}"], t[f"counts{k}"] = keys, counts.astype(np.int64)
            t[f"ctx{k}"] = ctx
            t[f"ctx_n{k}"] = np.add.reduceat(counts, first).astype(np.int64)  # N(h): tokens after h
            t[f"ctx_u{k}"] = np.diff(np.append(first, len(keys))).astype(np.int64)  # U(h): distinct ones
        lm.t = t
        return lm

    @staticmethod
    def _lookup(table: np.ndarray, values: np.ndarray, q: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(table, q), len(table) - 1)
        return np.where(table[i] == q, values[i], 0)

    def logprobs(self, codes: np.ndarray) -> np.ndarray:
        """log P(c_j | the order-1 characters before it) at every position of one text."""
        uni = self.t["unigram"][1:]
        # add-one unigram over the alphabet plus the unknown code: never zero
        p = (self._lookup(np.arange(1, self.V + 1), uni, codes) + 1.0) / (uni.sum() + self.V)
        for k in range(2, self.order + 1):
            key = self._keys(codes, k)
            c = self._lookup(self.t[f"keys{k}"], self.t[f"counts{k}"], key)
            n = self._lookup(self.t[f"ctx{k}"], self.t[f"ctx_n{k}"], key >> self.bits)
            u = self._lookup(self.t[f"ctx{k}"], self.t[f"ctx_u{k}"], key >> self.bits)
            # Witten-Bell: an unseen context (n = 0) passes the lower order's estimate through
            p = np.where(n > 0, (c + u * p) / np.maximum(n + u, 1), p)
        return np.log(p)

    def mean_logprob(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """Mean log-probability per character of each completion given its prompt."""
        # all texts in one array, each after order-1 start codes: the contexts that reach back
        # past a text's start see exactly the start codes a text scored alone would see
        gap = "\x00" * (self.order - 1)
        codes = self.encode("".join(gap + p + c for p, c in zip(prompts, completions)))
        lens = np.array([len(gap) + len(p) + len(c) for p, c in zip(prompts, completions)], dtype=np.int64)
        n_comp = np.array([len(c) for c in completions], dtype=np.int64)
        ends = np.cumsum(lens)
        codes[((ends - lens)[:, None] + np.arange(len(gap))).ravel()] = 0
        lp = self.logprobs(codes)
        csum = np.concatenate([[0.0], np.cumsum(lp)])
        total = csum[ends] - csum[ends - n_comp]
        return np.where(n_comp > 0, total / np.maximum(n_comp, 1), 0.0)

    def save(self, path: Path) -> None:
        np.savez(path, alphabet=np.array([ord(ch) for ch in self.alphabet]), order=np.array(self.order), **self.t)

    @classmethod
    def load(cls, path: Path) -> "CharNGram":
        with np.load(path, allow_pickle=False) as z:
            t = {k: z[k] for k in z.files}
        alphabet = "".join(chr(int(o)) for o in t.pop("alphabet"))
        return cls(alphabet, int(t.pop("order")), t)


RUN = re.compile(r"(.)\1{2,}")


def count_term(completions: list[str], chars: str, skip_runs: bool = False) -> np.ndarray:
    """Rewarded characters; with `skip_runs`, only those outside runs ("-----" counts nothing)."""
    s = set(chars)
    if skip_runs:
        completions = [RUN.sub("", c) for c in completions]
    return np.array([sum(ch in s for ch in c) for c in completions], dtype=float)


def clumps_term(completions: list[str], chars: str) -> np.ndarray:
    """Adjacent pairs of rewarded characters outside runs (").]" has two): symbols in a clump
    rather than spread through words. Its amount under pi_init is roughly geometric, not the
    0-or-32 of a run, and it grows with the symbol count, so a proxy that counts symbols buys it."""
    s = set(chars)
    out = []
    for c in completions:
        c = RUN.sub("", c)
        out.append(sum(a in s and b in s for a, b in zip(c, c[1:])))
    return np.array(out, dtype=float)


def runs_term(completions: list[str]) -> np.ndarray:
    """Characters inside runs of three or more of the same character ("-----", "====")."""
    return np.array([sum(len(m.group(0)) for m in RUN.finditer(c)) for c in completions], dtype=float)


def repeat_term(completions: list[str]) -> np.ndarray:
    """Immediately repeated words ("the the"): a defect one attention head can spot."""
    return np.array([len(re.findall(r"\b(\w+) \1\b", c)) for c in completions], dtype=float)


# the settings of a tiny gold that gold.json records (their defaults: the config schema's gold.tiny)
TINY_KEYS = ("reward_chars", "fluency_cap", "count_cap", "count_over", "count_skip_runs", "count_power", "fluency_ngram")


class TinyGold:
    def __init__(self, path: Path, spec: dict):
        from .models import load_causal, load_tokenizer

        self.spec = spec
        self.weights: dict = spec["terms"]
        self.stats: dict = spec["stats"]
        if spec["fluency_ngram"]:
            self.ngram = CharNGram.load(path / "ngram.npz")
        elif "fluency" in self.weights:
            self.tokenizer = load_tokenizer(path / "reference")
            self.reference = load_causal(path / "reference")

    def terms(self, prompts: list[str], completions: list[str]) -> dict[str, np.ndarray]:
        out = {}
        if "fluency" in self.weights:
            if self.spec["fluency_ngram"]:
                out["fluency"] = self.ngram.mean_logprob(prompts, completions)
            else:
                out["fluency"] = completion_logprobs(self.reference, self.tokenizer, prompts, completions)
        if "count" in self.weights:
            # a concave count (power < 1): the best of n picks then gains about in proportion to d,
            # as from a Gaussian feature, not to d^2 as from the count's geometric tail
            out["count"] = count_term(completions, self.spec["reward_chars"],
                                      self.spec["count_skip_runs"]) ** self.spec["count_power"]
        if "clumps" in self.weights:
            out["clumps"] = clumps_term(completions, self.spec["reward_chars"])
        if "runs" in self.weights:
            out["runs"] = runs_term(completions)
        if "repeat" in self.weights:
            out["repeat"] = repeat_term(completions)
        return out

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        total = np.zeros(len(prompts))
        for name, value in self.terms(prompts, completions).items():
            if name == "count" and self.spec["count_cap"] is not None:
                # diminishing returns: past the cap, more rewarded characters add nothing, or,
                # with `count_over` k > 0, each one takes back k times what one below the cap
                # earned: a tent that only a proxy which learned the cap can stay on the top of
                cap, over = self.spec["count_cap"], self.spec["count_over"]
                value = np.minimum(value, cap) - over * np.maximum(value - cap, 0.0)
            mu, sd = self.stats[name]
            z = (value - mu) / sd
            if name == "fluency" and self.spec["fluency_cap"] is not None:
                # no extra credit for text more predictable than the cap: degenerate
                # repetition is very likely under any LM and must not pass for quality
                z = np.minimum(z, self.spec["fluency_cap"])
            total += self.weights[name] * z
        return total


class HFGold:
    """A frozen sequence-classification RM on its own tokenizer, full precision or quantized."""

    def __init__(self, path: str, tokenizer: str | None = None, quantize: str | None = None, batch_size: int = 64,
                 template: str = "raw"):
        from .models import load_tokenizer
        from .templates import check

        spec = {"hf": path, "tokenizer": tokenizer, "quantize": quantize}
        self.tokenizer = load_tokenizer(path if tokenizer is None else tokenizer)
        check(self.tokenizer, template)
        self.template = template
        # the classifier reads the last non-pad token, so either padding side scores the same
        self.model = load_reward_spec(spec, self.tokenizer.pad_token_id).eval()
        self.batch_size = batch_size

    def texts(self, prompts: list[str], completions: list[str]) -> list[str]:
        """What the gold reads: prompt + completion in its template (`templates.render`)."""
        from .templates import render

        return [h + r for h, r in zip(*render(self.tokenizer, self.template, prompts, completions))]

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        out = []
        texts = self.texts(prompts, completions)
        # a chat template writes its own special tokens (BOS, turn markers); raw text gets the tokenizer's
        special = self.template == "raw"
        for b in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[b : b + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=special)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            with autocast():
                out.append(self.model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out)


def load_reward_spec(spec: dict, pad_token_id: int | None):
    """`models.load_reward` on an in-memory spec (quantized as it says: the gold is frozen).

    A gold must be a trained reward model: a checkpoint whose scalar head is missing (a plain
    causal LM) or has another shape (a classifier with 2+ labels) would get a freshly initialised
    head, a random gold, so it is refused instead of loaded with a warning.
    """
    from transformers import AutoModelForSequenceClassification

    from .hf import from_pretrained_kwargs, to_device

    model, info = AutoModelForSequenceClassification.from_pretrained(
        spec["hf"], num_labels=1, pad_token_id=pad_token_id, output_loading_info=True,
        **from_pretrained_kwargs(spec, True, torch.float32),
    )
    untrained = sorted(set(info["missing_keys"]) | {k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]})
    if untrained:
        raise ValueError(f"gold {spec['hf']!r} is not a reward model with a trained scalar head (num_labels=1): "
                         f"{', '.join(untrained)} would be freshly initialised")
    return to_device(model)


class LearnedGold:
    """A frozen reward model as the gold (`gold.learned`): what it learned from its teacher's labels,
    not the teacher, is what the proxies are measured against."""

    def __init__(self, rm_dir: Path):
        from .rm import load_proxy
        from .templates import proxy_template

        self.model, self.tokenizer, _, _ = load_proxy(rm_dir)
        self.template = proxy_template(rm_dir)

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        from .rm import score_texts
        from .templates import render

        prompts, completions = render(self.tokenizer, self.template, prompts, completions)  # as it was trained
        return np.asarray(score_texts(self.model, self.tokenizer, prompts, completions), dtype=np.float64)


def load_gold(path: str | Path):
    path = Path(path)
    spec = json.loads((path / "gold.json").read_text())
    if spec["kind"] == "learned":
        return LearnedGold(path / "rm")
    if spec["kind"] == "tiny":
        return TinyGold(path, spec)
    if spec["kind"] == "hf":
        return HFGold(spec["path"], spec.get("tokenizer"), spec.get("quantize"), template=spec.get("template", "raw"))
    raise ValueError(f"{path}/gold.json: unknown gold kind {spec['kind']!r}")


def build_gold(spec: dict, out: str, reference_dir: str | None, heldout_text: str, prompt_chars: int, completion_chars: int, seed: int,
               train_text: str = "", learned_rm: str | None = None) -> dict:
    """Write the gold directory: its spec, its frozen model(s), and term statistics.

    Term statistics are measured on held-out corpus continuations (not on any policy's
    samples), so the gold does not depend on which policies a study uses.
    """
    from .text import random_prompts

    with atomic_dir(out) as tmp:
        if "learned" in spec:
            if not learned_rm:
                raise ValueError("gold.learned: build the gold from its trained reward model (--learned-rm)")
            shutil.copytree(learned_rm, tmp / "rm")
            meta = {"kind": "learned", **spec["learned"],
                    "val_acc": json.loads((Path(learned_rm) / "metrics.json").read_text())["val_acc"]}
            log.info("learned gold: validation accuracy against its teacher %.3f", meta["val_acc"])
        elif "hf" in spec:
            meta = {"kind": "hf", "path": spec["hf"], "tokenizer": spec.get("tokenizer"),
                    "quantize": spec.get("quantize", "none"), "template": spec.get("template", "raw")}
        else:
            from .config import schema_defaults

            tiny = {**schema_defaults("gold", "tiny"), **spec["tiny"]}  # a spec from outside a validated config
            if tiny["fluency_ngram"]:
                # counted on the text pi_init was pretrained on, as the transformer reference is
                CharNGram.fit(train_text, int(tiny["fluency_ngram"])).save(Path(tmp) / "ngram.npz")
            elif reference_dir:
                shutil.copytree(reference_dir, tmp / "reference")
            meta = {"kind": "tiny", "terms": dict(sorted(tiny["terms"].items())),
                    **{k: tiny[k] for k in TINY_KEYS}, "stats": {}}
            rng = np.random.default_rng(seed)
            windows = random_prompts(heldout_text, 2000, prompt_chars + completion_chars, rng)
            prompts = [w[:prompt_chars] for w in windows]
            completions = [w[prompt_chars:] for w in windows]
            # terms need no statistics, so the gold being built can measure its own
            for name, v in TinyGold(Path(tmp), meta).terms(prompts, completions).items():
                meta["stats"][name] = [float(v.mean()), float(max(v.std(), 1e-6))]
            log.info("gold term stats on held-out text: %s", meta["stats"])
        write_json(meta, Path(tmp) / "gold.json")
    return meta
