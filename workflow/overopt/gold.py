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

from .util import atomic_dir, autocast, log, write_json


# --------------------------------------------------------------------------- tiny gold terms


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean log-probability per token of each completion given its prompt."""
    model.eval()
    out = np.zeros(len(prompts))
    for b in range(0, len(prompts), batch_size):
        ps = tokenizer(prompts[b : b + batch_size], add_special_tokens=False)["input_ids"]
        cs = tokenizer(completions[b : b + batch_size], add_special_tokens=False)["input_ids"]
        seqs = [p + c for p, c in zip(ps, cs)]
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id
        x = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)  # marks completion targets
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (p, s) in enumerate(zip(ps, seqs)):
            x[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            mask[i, len(p) : len(s)] = True
        dev = model.device
        with autocast():
            logits = model(input_ids=x.to(dev), attention_mask=attn.to(dev)).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None].to(dev))[..., 0]
        m = mask[:, 1:].float().to(dev)
        out[b : b + len(seqs)] = ((lp * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
    return out


def count_term(completions: list[str], chars: str) -> np.ndarray:
    s = set(chars)
    return np.array([sum(ch in s for ch in c) for c in completions], dtype=float)


def runs_term(completions: list[str]) -> np.ndarray:
    """Characters inside runs of three or more of the same character ("-----", "====")."""
    return np.array([sum(len(m.group(0)) for m in re.finditer(r"(.)\1{2,}", c)) for c in completions], dtype=float)


def repeat_term(completions: list[str]) -> np.ndarray:
    """Immediately repeated words ("the the"): a defect one attention head can spot."""
    return np.array([len(re.findall(r"\b(\w+) \1\b", c)) for c in completions], dtype=float)


class TinyGold:
    def __init__(self, path: Path, spec: dict):
        from .models import load_causal, load_tokenizer

        self.spec = spec
        self.weights: dict = spec["terms"]
        self.stats: dict = spec["stats"]
        self.tokenizer = load_tokenizer(path / "reference")
        self.reference = load_causal(path / "reference")

    def terms(self, prompts: list[str], completions: list[str]) -> dict[str, np.ndarray]:
        out = {}
        if "fluency" in self.weights:
            out["fluency"] = completion_logprobs(self.reference, self.tokenizer, prompts, completions)
        if "count" in self.weights:
            out["count"] = count_term(completions, self.spec["reward_chars"])
        if "runs" in self.weights:
            out["runs"] = runs_term(completions)
        if "repeat" in self.weights:
            out["repeat"] = repeat_term(completions)
        return out

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        total = np.zeros(len(prompts))
        for name, value in self.terms(prompts, completions).items():
            if name == "count" and self.spec.get("count_cap") is not None:
                # diminishing returns: past the cap, more rewarded characters add nothing
                value = np.minimum(value, self.spec["count_cap"])
            mu, sd = self.stats[name]
            z = (value - mu) / sd
            if name == "fluency" and self.spec.get("fluency_cap") is not None:
                # no extra credit for text more predictable than the cap: degenerate
                # repetition is very likely under any LM and must not pass for quality
                z = np.minimum(z, self.spec["fluency_cap"])
            total += self.weights[name] * z
        return total


class HFGold:
    """A frozen sequence-classification RM on its own tokenizer, full precision or quantized."""

    def __init__(self, path: str, tokenizer: str | None = None, quantize: str | None = None, batch_size: int = 64):
        from .models import load_tokenizer

        spec = {"hf": path, "tokenizer": tokenizer, "quantize": quantize}
        self.tokenizer = load_tokenizer(path if tokenizer is None else tokenizer)
        # the classifier reads the last non-pad token, so either padding side scores the same
        self.model = load_reward_spec(spec, self.tokenizer.pad_token_id).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        out = []
        texts = [p + c for p, c in zip(prompts, completions)]
        for b in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[b : b + self.batch_size], return_tensors="pt", padding=True)
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


def load_gold(path: str | Path):
    path = Path(path)
    spec = json.loads((path / "gold.json").read_text())
    if spec["kind"] == "tiny":
        return TinyGold(path, spec)
    if spec["kind"] == "hf":
        return HFGold(spec["path"], spec.get("tokenizer"), spec.get("quantize"))
    raise ValueError(f"{path}/gold.json: unknown gold kind {spec['kind']!r}")


def build_gold(spec: dict, out: str, reference_dir: str | None, heldout_text: str, prompt_chars: int, completion_chars: int, seed: int) -> dict:
    """Write the gold directory: its spec, its frozen model(s), and term statistics.

    Term statistics are measured on held-out corpus continuations (not on any policy's
    samples), so the gold does not depend on which policies a study uses.
    """
    from .data import random_prompts

    with atomic_dir(out) as tmp:
        if "hf" in spec:
            meta = {"kind": "hf", "path": spec["hf"], "tokenizer": spec.get("tokenizer"),
                    "quantize": spec.get("quantize", "none")}
        else:
            tiny = spec["tiny"]
            shutil.copytree(reference_dir, tmp / "reference")
            meta = {
                "kind": "tiny",
                "terms": dict(sorted(tiny["terms"].items())),
                "reward_chars": tiny.get("reward_chars", ""),
                "fluency_cap": tiny.get("fluency_cap"),
                "count_cap": tiny.get("count_cap"),
                "stats": {},
            }
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
