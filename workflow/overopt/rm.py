"""Proxy reward models: an LM base plus a scalar head, trained with the Bradley-Terry loss."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .hf import ADAPTER_BASE, add_lora, read_spec, trainable_parameters
from .models import (PROMPT_REUSE_MIN, count_params, direct_gpt2, gpt2_rewards_with_prefix, last_token, load_causal,
                     load_reward, load_tokenizer, read_metrics, reward_forward)
from .text import CharCodec, encode_texts, pad_ids, prompt_batches, split_at_prompts
from .keys import proxy_keys, read_comparisons
from .optim import Adam, lambda_schedule
from .util import Progress, atomic_dir, autocast, device, log, seed_everything, write_json

READOUT = "readout.json"      # in a proxy's directory: the weight (and cap) of its base-likelihood feature
REFERENCE = "reference"       # ... and the frozen base that feature is read from (a copy, or a spec file)
# the cap's softness in nats per token: under a hard min tau has no gradient unless some text lies
# above it, so a cap warm-started at the likeliest text (no cap) could never come down in training
CAP_SOFTNESS = 0.1


class Readout(NamedTuple):
    """A proxy's base-likelihood readout: weight x min(loglik, cap), soft; cap None = uncapped.
    Floats for a trained proxy, the learnable tensors while training."""
    weight: float = 0.0
    cap: float | None = None

    def __call__(self, ll):
        return self.weight * soft_cap(ll, self.cap)


def soft_cap(ll, cap):
    """min(ll, cap), smoothed over CAP_SOFTNESS; ll and cap both torch tensors or both numbers/arrays."""
    if cap is None:
        return ll
    if isinstance(ll, torch.Tensor):
        return ll - CAP_SOFTNESS * F.softplus((ll - cap) / CAP_SOFTNESS)
    return ll - CAP_SOFTNESS * np.logaddexp(0.0, (np.asarray(ll) - cap) / CAP_SOFTNESS)


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged; logsigmoid keeps large margins finite."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def encode(tokenizer, texts: list[str]) -> dict:
    if CharCodec.of(tokenizer) is not None:  # the tiny world: table lookups, same ids
        ids, mask = pad_ids(encode_texts(tokenizer, texts), tokenizer.pad_token_id)
        return {"input_ids": ids.to(device()), "attention_mask": mask.to(device())}
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device()) for k, v in enc.items()}


def rewards(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode(), autocast():
        for b in range(0, len(texts), batch_size):
            out.append(reward_forward(model, **encode(tokenizer, texts[b : b + batch_size])).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def pair_logliks(lm_dir: str, df: pd.DataFrame, label: np.ndarray, table: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean log-likelihood per token of the chosen and of the rejected completion under the
    frozen base `lm_dir`: looked up in `table` (`loglik.pairs_table`, made once for every proxy
    of this base), or computed here."""
    from .loglik import FrozenLM
    from .loglik import pair_logliks as lookup

    if table is not None:
        return lookup(table, df, label)
    lm, prompts = FrozenLM(lm_dir), df["prompt"].tolist()
    ll_a, ll_b = lm(prompts, df["completion_a"].tolist()), lm(prompts, df["completion_b"].tolist())
    return np.where(label == 1, ll_a, ll_b), np.where(label == 1, ll_b, ll_a)


def logistic_scale(x: np.ndarray, iters: int = 50) -> float:
    """The c maximising sum log sigmoid(c x): the Bradley-Terry weight of one feature alone (Newton)."""
    from scipy.special import expit  # no overflow warnings where |c x| is large

    c = 0.0
    for _ in range(iters):
        p = expit(c * x)
        grad, hess = np.sum((1 - p) * x), np.sum(p * (1 - p) * x * x)
        if hess <= 0:
            break
        step = grad / hess
        c += step
        if abs(step) < 1e-9:
            break
    return float(c)


def warm_cap(llc: np.ndarray, llr: np.ndarray) -> tuple[float, float]:
    """(c, tau) maximising sum log sigmoid(c (soft_cap(llc, tau) - soft_cap(llr, tau))): tau
    from quantiles of the texts' log-likelihoods up to the likeliest (in effect no cap), c by
    Newton at each. A grid, not gradient steps: the loss is flat in tau above the likeliest text."""
    both = np.r_[llc, llr]
    best = None
    for tau in list(np.quantile(both, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995])) + [float(both.max())]:
        x = soft_cap(llc, tau) - soft_cap(llr, tau)
        c = logistic_scale(x)
        nll = float(np.mean(np.logaddexp(0.0, -c * x)))
        if best is None or nll < best[0]:
            best = (nll, c, float(tau))
    return best[1], best[2]


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


def evaluate(model, tokenizer, df: pd.DataFrame, lm_dir: str | None = None, readout: Readout = Readout(),
             loglik: str | None = None) -> dict:
    """Validation BT loss and accuracy against the (noise-free) gold labels; with `lm_dir`, the
    proxy's score includes its readout of that base (log-likelihoods from the `loglik` table)."""
    chosen, rejected = chosen_rejected(df.assign(label=df["gold_label"]))
    rc = torch.tensor(rewards(model, tokenizer, chosen))
    rr = torch.tensor(rewards(model, tokenizer, rejected))
    if lm_dir is not None:
        llc, llr = pair_logliks(lm_dir, df, df["gold_label"].to_numpy(), loglik)
        rc, rr = rc + torch.tensor(readout(llc)), rr + torch.tensor(readout(llr))
    return {"val_loss": bt_loss(rc, rr).item(), "val_acc": float(((rc > rr).float() + 0.5 * (rc == rr).float()).mean())}


def train_rm(
    base_dir: str,
    comparisons: str | list[str],
    out: str,
    data_size: int,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    threads: int,
    base_loglik: bool = False,
    readout_lr: float | None = None,
    readout_cap: bool = False,
    loglik: str | None = None,
    *,
    policy: str,
    rm: str,
) -> dict:
    """One proxy: the base with a fresh scalar head on its last token, trained with the BT loss.

    `base_loglik` adds a second readout: c times the completion's mean log-likelihood per token
    under the proxy's own *frozen* base, c learned with the head. Fine-tuning a base into a
    classifier leaves its language model unused by the head (docs/world.md, entry 9: proxies of
    every size learned the same small weight on fluency); this readout hands the head what the
    base knows about text, so a larger base (a better LM) makes a better proxy. The feature is
    constant in training (the base is frozen), so it is computed once per text, before the loop.

    `readout_cap` caps that feature: the score reads c x min(loglik, tau), softened (`soft_cap`),
    tau learned with c. Texts far likelier than any fluent one (runs: "=====") are what an
    uncapped readout rewards most, and the gold does not (docs/world.md, entry 16). Both start
    at the one-feature Bradley-Terry optimum (`warm_cap`), which leaves the feature uncapped where
    the pairs do not ask for a cap. `loglik`: the base's table of pair log-likelihoods
    (`loglik.pairs_table`); without it they are computed here, to the same numbers. `policy`, `rm`:
    the names of its grid cell, recorded with the data size and seed as its keys (`keys.CELL`).
    `comparisons`: the labelled set, or its parts up to `data_size` (`keys.read_comparisons`)."""
    from .templates import render_frame, template_of

    seed_everything(seed, threads)
    tok = load_tokenizer(base_dir)
    template = template_of(base_dir)
    files = [comparisons] if isinstance(comparisons, (str, Path)) else list(comparisons)
    df = render_frame(tok, template, read_comparisons(files), ("completion_a", "completion_b"))  # as the base reads them
    train = train_subset(df, data_size)
    val = df[df["split"] == "val"]
    model = load_reward(base_dir, pad_token_id=tok.pad_token_id)
    n_params = count_params(model)  # the proxy's size is its base's, with or without an adapter
    spec = read_spec(base_dir)
    if spec.get("lora"):
        model = add_lora(model, spec["lora"], "SEQ_CLS")
    params = trainable_parameters(model)
    chosen, rejected = chosen_rejected(train)
    weight, tau, llc, llr = None, None, None, None
    if base_loglik:
        llc, llr = (torch.tensor(x, dtype=torch.float32)
                    for x in pair_logliks(base_dir, train, train["label"].to_numpy(), loglik))
        # warm start: the feature's weight (and cap) alone, by logistic regression on the pairs; a
        # scalar moved by Adam from 0 at lr 1e-3 for 125 steps could not travel further than ~0.1
        if readout_cap:
            c0, t0 = warm_cap(llc.numpy(), llr.numpy())
            tau = torch.nn.Parameter(torch.tensor(t0, dtype=torch.float32))
        else:
            c0 = logistic_scale((llc - llr).numpy())
        weight = torch.nn.Parameter(torch.tensor(c0, dtype=torch.float32))
        log.info("base log-likelihood readout: warm-start weight %.3f, cap %s", c0, "none" if tau is None else f"{t0:.3f}")
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    groups = [{"params": params}]
    if weight is not None:
        # Adam moves a lone scalar by about its lr each step whatever the gradient's size: at a small
        # base's lr 1e-2 the warm-started weight can random-walk far from its fit (docs/world.md, entry 14)
        readout = [weight] + ([tau] if tau is not None else [])
        groups.append({"params": readout, "lr": readout_lr or lr})
        params = params + readout
    live = Readout(weight, tau)  # the readout on its learnable tensors
    opt = Adam(groups, lr=lr)
    # linear decay to zero over the run: one pass over the data, as in the paper
    sched = lambda_schedule(opt, lambda s: 1.0 - s / max(total, 1))
    g = np.random.default_rng(seed)
    prog = Progress(f"train_rm[{n_params} params, {data_size} pairs]", total)
    step = 0
    for _ in range(epochs):
        order = g.permutation(len(train))
        model.train()
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            enc = encode(tok, [chosen[i] for i in idx] + [rejected[i] for i in idx])
            with autocast():
                r = reward_forward(model, enc["input_ids"], enc.get("attention_mask"))
            rc, rr = r[: len(idx)], r[len(idx) :]
            if weight is not None:
                rc, rr = rc + live(llc[idx]), rr + live(llr[idx])
            loss = bt_loss(rc, rr)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched()
            step += 1
            prog(step, loss=loss.item())
    w = None if weight is None else float(weight.detach())
    cap = None if tau is None else float(tau.detach())
    metrics = {
        **evaluate(model, tok, val, base_dir if base_loglik else None, Readout(w or 0.0, cap), loglik),
        "base_loglik_weight": w,
        "base_loglik_cap": cap,
        "template": template,
        "params": n_params,
        "trainable_params": sum(p.numel() for p in params),
        "lora": bool(spec.get("lora")),
        "base_params": read_metrics(base_dir).get("params", n_params),
        "train_pairs": int(len(train)),
        "val_pairs": int(len(val)),
        "epochs": epochs,
        "seed": seed,
        "seconds": prog.elapsed,
        "keys": proxy_keys(policy, rm, data_size, seed),
    }
    log.info("proxy RM: val_acc=%.3f val_loss=%.3f (%d params, %d pairs)", metrics["val_acc"], metrics["val_loss"], n_params, len(train))
    with atomic_dir(out) as tmp:
        # a LoRA proxy saves its adapter and head (safetensors) and the spec of the base they sit on
        model.save_pretrained(str(tmp), safe_serialization=True)
        if spec.get("lora"):
            write_json({k: v for k, v in spec.items() if k not in ("lora", "quantize")}, Path(tmp) / ADAPTER_BASE)
        tok.save_pretrained(str(tmp))
        if base_loglik:
            write_json({"base_loglik_weight": w, "base_loglik_cap": cap}, Path(tmp) / READOUT)
            if str(base_dir).endswith(".json"):  # an hf spec: its hub id or path, and quantize: for the frozen copy
                shutil.copyfile(base_dir, Path(tmp) / f"{REFERENCE}.json")
            else:  # a tiny base: a copy of its few hundred kB, so the proxy directory stands alone
                shutil.copytree(base_dir, Path(tmp) / REFERENCE)
        write_json(metrics, Path(tmp) / "metrics.json")
    return metrics


def load_proxy(rm_dir: str | Path):
    """A trained proxy as (model, tokenizer, frozen base LM or None, its `Readout`)."""
    import json

    tok = load_tokenizer(rm_dir)
    model = load_reward(rm_dir, pad_token_id=tok.pad_token_id).eval().requires_grad_(False)
    readout = Path(rm_dir) / READOUT
    if not readout.is_file():
        return model, tok, None, Readout()
    spec = Path(rm_dir) / f"{REFERENCE}.json"
    lm = load_causal(spec if spec.is_file() else Path(rm_dir) / REFERENCE, frozen=True).eval().requires_grad_(False)
    r = json.loads(readout.read_text())
    return model, tok, lm, Readout(float(r["base_loglik_weight"]), r.get("base_loglik_cap"))


def loglik_readout(lm, readout: Readout, tokenizer, prompts: list[str], completions: list[str]) -> np.ndarray | float:
    """The base-likelihood part of a proxy's score (0 for a proxy without one)."""
    from .loglik import batch_size
    from .models import completion_logprobs

    if lm is None:
        return 0.0
    return readout(completion_logprobs(lm, tokenizer, prompts, completions, batch_size=batch_size()))


def score_texts(model, tokenizer, prompts: list[str], completions: list[str]) -> np.ndarray:
    """Rewards of prompt + completion by whichever path is faster: each prompt once for all of
    its completions where prompts repeat (a PPO evaluation), else batches of joined texts (a PPO
    rollout batch: one completion per prompt). Both give the same numbers to float rounding."""
    if len(prompts) >= PROMPT_REUSE_MIN * len(set(prompts)):
        return rewards_by_prompt(model, tokenizer, prompts, completions)
    return rewards(model, tokenizer, [p + c for p, c in zip(prompts, completions)])


def rewards_by_prompt(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int | None = None,
                      dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Rewards of prompt + completion, the same numbers as `rewards` on the joined texts, but
    each distinct prompt is run through the model once and its keys/values reused for all of its
    completions (a best-of-n pool holds thousands per prompt: this halves the work at equal
    prompt and completion lengths). A completion whose joined tokenization does not split at the
    prompt boundary is scored on the joined text (`data.split_at_prompts`).

    `dtype=torch.bfloat16` runs the transformer body in bf16 (a bf16 copy of a GPT-2's weights;
    autocast for any other model) and the score head in float32, so that scores keep their
    resolution and near-ties their order. On the default study's 357k proxy: 2.1x faster on an AMX
    CPU (9.6x slower where bf16 is emulated: `util.native_bf16`), mean |difference| 0.0018
    against float32 for scores of s.d. 0.72, the same best sample for every prompt (measured)."""
    from .batches import SCORE, rows

    batch_size = batch_size or rows(SCORE)
    model.eval()
    out = np.empty(len(prompts), dtype=np.float64)
    groups, rest = split_at_prompts(tokenizer, prompts, completions)
    if len(rest):
        out[rest] = rewards(model, tokenizer, [prompts[i] + completions[i] for i in rest])
    direct = direct_gpt2(model)
    pad = model.config.pad_token_id
    low = dtype != torch.float32
    body = copy.deepcopy(model).to(dtype) if direct and low else model
    ctx = torch.autocast(device().type, dtype=dtype) if low and not direct else autocast()
    with torch.inference_mode(), ctx:
        if direct:  # plain float32 GPT-2 (the tiny world): the written-out forward pass
            for p_ids, owner, comps, idx in prompt_batches(groups, batch_size):
                ids = pad_ids(comps, pad)[0].to(device())
                last = last_token(ids, pad)  # the position the HF model reads
                out[idx] = gpt2_rewards_with_prefix(model, p_ids, ids, last, body, owner).float().cpu().numpy()
            groups = []
        for p_ids, idx, comps in groups:
            prefix = model(input_ids=torch.tensor([p_ids], device=device()), use_cache=True).past_key_values
            for b in range(0, len(idx), batch_size):
                ids, mask = pad_ids(comps[b : b + batch_size], pad)
                n = ids.shape[0]
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(n)
                mask = torch.cat([torch.ones(n, len(p_ids), dtype=mask.dtype), mask], 1)
                logits = model(input_ids=ids.to(device()), attention_mask=mask.to(device()), past_key_values=cache).logits
                out[idx[b : b + n]] = logits[:, 0].float().cpu().numpy()
    return out
