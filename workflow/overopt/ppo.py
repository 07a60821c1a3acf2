"""PPO against a proxy reward model, read top to bottom (in the spirit of CleanRL's ppo.py).

One run = one policy optimised against one frozen proxy RM. Every `eval_every` steps the
policy is evaluated on held-out prompts: proxy, gold, and the sampled KL to pi_init, which is
the mean over samples of the exact sum over tokens of log pi - log pi_init.

A run checkpoints to a directory outside its final target, and resumes from the last
checkpoint when rerun, giving the same CSV as an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .checkpoints import inputs_fingerprint, load_checkpoint, save_checkpoint
from .config import schema_defaults
from .keys import with_keys
from .optim import Adam
from .util import Progress, atomic_file, autocast, device, generator, log, seed_everything


# the configurable settings take their defaults from the config schema (rl), defined there once
_RL = schema_defaults("rl")


@dataclass
class PPOConfig:
    steps: int = _RL["steps"]
    batch_size: int = _RL["batch_size"]  # rollouts per PPO step
    minibatch_size: int = _RL["minibatch_size"]
    epochs: int = _RL["epochs"]  # optimisation passes over each batch
    lr: float = _RL["lr"]
    value_lr: float = _RL["value_lr"]  # the value head's own learning rate (0: the policy's)
    trust_kl: float = _RL["trust_kl"]  # loss + trust_kl * KL(pi_rollout || pi) per sequence: a trust region per update
    eval_every: int = _RL["eval_every"]
    eval_prompts: int = _RL["eval_prompts"]
    eval_samples: int = _RL["eval_samples"]
    checkpoint_every: int = _RL["checkpoint_every"]
    kl_penalty: float = 0.0  # per-token reward -kl_penalty * (log pi - log pi_init); a grid axis (kl_penalties)
    seed: int = 0  # the proxy's seed
    # the algorithm's constants (not config keys): CleanRL's defaults
    clip: float = 0.2  # clipped surrogate ratio
    vf_coef: float = 0.5
    gae_lambda: float = 0.95
    gamma: float = 1.0
    max_grad_norm: float = 1.0


# --------------------------------------------------------------------------- log-probs and KL


def masked_logprobs(model, seq, n_prompt, banned, return_hidden=False, return_entropy=False):
    """Log-probs under the same support the sampler uses (special tokens masked out); with
    `return_entropy`, also the policy's entropy per completion token (a diagnostic, no gradient)."""
    from .models import lm_logits

    out = lm_logits(model, seq[:, :-1], n_prompt - 1, return_hidden=return_hidden)
    logits, h = out if return_hidden else (out, None)
    if banned:
        logits[..., banned] = -float("inf")
    logp_all = torch.log_softmax(logits, -1)
    lp = logp_all.gather(-1, seq[:, n_prompt:, None])[..., 0]
    out = (lp,) + ((h,) if return_hidden else ())
    if return_entropy:
        with torch.no_grad():
            out += (torch.special.entr(logp_all.exp()).sum(-1),)
    return out if len(out) > 1 else lp


def sampled_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-sequence sum over tokens of log pi - log pi_init; its mean estimates KL(pi || pi_init)."""
    return (logp - logp_ref).sum(-1)


# --------------------------------------------------------------------------- advantages and loss


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (B, T) token rewards; the episode ends after T."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros(B, device=rewards.device)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def rollout_kl(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) per sequence from the rollout's own samples: the sum over tokens of
    (r - 1) - log r, r = pi / pi_old, whose expectation under pi_old is the exact KL (E[r] = 1)
    and which, unlike the plain -log r, is never negative."""
    log_r = logp - old_logp
    return (torch.exp(log_r) - 1 - log_r).sum(-1)


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's pessimistic surrogate: max of the unclipped and clipped ratio losses."""
    ratio = torch.exp(logp - old_logp)
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()


# --------------------------------------------------------------------------- the run


class ValueHead(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.v = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.v.weight)
        torch.nn.init.zeros_(self.v.bias)

    def forward(self, h):
        return self.v(h)[..., 0]


def proxy_reward_fn(rm_dir: str, offset: float):
    """Reward = the frozen proxy's score of prompt + completion, re-centred on pi_init."""
    from .rm import load_proxy, loglik_readout, score_texts
    from .templates import proxy_template, render

    model, tok, lm, readout = load_proxy(rm_dir)
    template = proxy_template(rm_dir)

    def reward(prompts, comps):
        prompts, comps = render(tok, template, prompts, comps)  # as the proxy reads them
        return score_texts(model, tok, prompts, comps) + loglik_readout(lm, readout, tok, prompts, comps) - offset

    return reward


def gold_score_fn(gold_dir: str, pool_gold: str):
    """Gold standardised exactly as in best-of-n: by the pool's raw-gold mean and std."""
    from .gold import load_gold

    gold = load_gold(gold_dir)
    raw = pd.read_parquet(pool_gold)["gold_raw"]
    mu, sd = float(raw.mean()), float(raw.std())
    return lambda prompts, comps: (gold.score(prompts, comps) - mu) / sd


def run_ppo(
    policy_dir: str,
    reward_fn,
    gold_fn,
    out: str,
    ckpt_dir: str,
    train_prompts: list[str],
    eval_prompts: list[str],
    completion_tokens: int,
    cfg: PPOConfig,
    threads: int = 1,
    inputs: tuple = (),
    updates_out: str | None = None,
    keys: dict | None = None,
    by_prompt_out: str | None = None,
) -> pd.DataFrame:
    """PPO on `reward_fn(prompts, completions) -> np.ndarray`, evaluated with `gold_fn` too.

    The policy works in its own token ids; the proxy and the gold see text (prompt + decoded
    completion), each through its own tokenizer. A policy whose spec has `lora:` trains an
    adapter only, and its pi_init is the same weights with the adapter disabled (no second copy).
    `inputs`: the files behind `reward_fn` and `gold_fn`, part of the checkpoint's fingerprint.
    `updates_out`: a CSV of the optimiser's diagnostics, one row per step (CleanRL's): approximate
    KL to the rollout policy, clip fraction, policy and value loss, the trust-region term, entropy,
    explained variance of the value head, and the gradient norm before clipping.
    `keys`: the run's grid keys (`keys.RUN`), written as columns of the curve.
    `by_prompt_out`: a CSV of every evaluation's gold and proxy per evaluation prompt (the mean
    over its samples): the clusters of the findings' bootstrap (docs/findings.md).
    """
    from .text import decode_ids, encode_texts
    from .hf import add_lora, read_spec, trainable_parameters
    from .models import banned_token_ids, load_causal, load_tokenizer, sample
    from .templates import render_prompts, template_of

    seed_everything(cfg.seed, threads)
    tok = load_tokenizer(policy_dir)
    policy = load_causal(policy_dir)
    lora = read_spec(policy_dir).get("lora")
    if lora:
        policy = add_lora(policy, lora, "CAUSAL_LM")
        ref = None
    else:
        ref = load_causal(policy_dir, frozen=True).eval().requires_grad_(False)  # pi_init, frozen

    def ref_logprobs(seq, n_prompt):
        if ref is not None:
            return masked_logprobs(ref, seq, n_prompt, banned)
        with policy.disable_adapter():
            return masked_logprobs(policy, seq, n_prompt, banned)

    banned = banned_token_ids(tok)
    dev = device()
    value = ValueHead(policy.config.hidden_size).to(dev)
    policy_params, value_params = trainable_parameters(policy), list(value.parameters())
    params = policy_params + value_params  # both clipped together
    # the value head has its own learning rate: a zero-initialised linear head at the policy's
    # small lr stays near zero, the baseline is then little more than the batch mean, and the
    # noisier advantages spend KL on noise (default study, 357k proxy: gold by d 1.8 without a
    # KL penalty 0.42 at the policy's lr, 0.60 at 3e-3; docs/world.md, entry 11)
    opt = Adam([{"params": policy_params}, {"params": value_params, "lr": cfg.value_lr or cfg.lr}], lr=cfg.lr, eps=1e-5)
    g = generator(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # the policy is prompted in its own template; the proxy and the gold read the raw prompt
    asked = dict(zip(train_prompts, render_prompts(tok, template_of(policy_dir), list(train_prompts))))
    asked.update(zip(eval_prompts, render_prompts(tok, template_of(policy_dir), list(eval_prompts))))

    def encode(prompts):
        return torch.tensor(encode_texts(tok, [asked[p] for p in prompts]), dtype=torch.long, device=dev)

    # Rollouts need equal-length prompts (no padding in the sampler). Prompts are grouped by
    # token length; a batch comes from one group, chosen with probability proportional to its
    # size, so every prompt is still drawn uniformly. Corpus windows form a single group.
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encode_texts(tok, [asked[p] for p in train_prompts])):
        groups.setdefault(len(ids), []).append(i)
    groups_idx = [np.array(v) for _, v in sorted(groups.items())]
    group_p = np.array([len(v) for v in groups_idx]) / len(train_prompts)

    def draw_batch():
        if len(groups_idx) == 1:
            return rng.integers(0, len(train_prompts), cfg.batch_size)
        members = groups_idx[rng.choice(len(groups_idx), p=group_p)]
        return members[rng.integers(0, len(members), cfg.batch_size)]

    ev_prompts = [p for p in eval_prompts[: cfg.eval_prompts] for _ in range(cfg.eval_samples)]
    ev_groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encode_texts(tok, [asked[p] for p in ev_prompts])):
        ev_groups.setdefault(len(ids), []).append(i)
    ev_batches = [(idx, encode([ev_prompts[i] for i in idx])) for _, idx in sorted(ev_groups.items())]
    ev_g = generator(cfg.seed + 1)

    @torch.no_grad()
    def evaluate(step):
        ev_g.manual_seed(cfg.seed + 1)  # the same sampling noise at every evaluation
        kls, comps = [], [""] * len(ev_prompts)
        for idx, ev_x in ev_batches:
            with autocast():
                # the sampler's own log-probs of its tokens: no second pass of the policy
                y, logp, _ = sample(policy, ev_x, completion_tokens, banned=banned, generator=ev_g, return_scores=True)
                kls.append(sampled_kl(logp, ref_logprobs(torch.cat([ev_x, y], 1), ev_x.shape[1])))
            for i, c in zip(idx, decode_ids(tok, y.cpu())):
                comps[i] = c
        kl = torch.cat(kls)
        gs = gold_fn(ev_prompts, comps)
        ps = reward_fn(ev_prompts, comps)
        n = len(comps)
        # ev_prompts holds each prompt's samples side by side: rows of this view are prompts
        by_prompt = lambda x: np.asarray(x, dtype=float).reshape(-1, cfg.eval_samples).mean(1).tolist()
        return {"step": step, "kl": float(kl.mean()), "gold": float(gs.mean()), "gold_se": float(gs.std(ddof=1) / np.sqrt(n)),
                "proxy": float(ps.mean()), "proxy_se": float(ps.std(ddof=1) / np.sqrt(n)),
                "gold_by_prompt": by_prompt(gs), "proxy_by_prompt": by_prompt(ps)}

    ckpt = Path(ckpt_dir)
    start, rows, updates = 0, [], []
    # the optimiser's class is part of it: a checkpoint holds its state in that class's format
    fingerprint = inputs_fingerprint([policy_dir, *inputs], cfg=asdict(cfg), completion_tokens=completion_tokens,
                                     train_prompts=list(train_prompts), eval_prompts=list(eval_prompts),
                                     optimizer=f"{type(opt).__module__}.{type(opt).__qualname__}")
    if (ckpt / "meta.json").exists() and json.loads((ckpt / "meta.json").read_text()).get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint of a run with other inputs or settings; starting over", ckpt)
        shutil.rmtree(ckpt)
    if (ckpt / "meta.json").exists():
        start, rows, updates = load_checkpoint(ckpt, policy, value, opt, g, rng)
        log.info("resuming from checkpoint at step %d", start)
    else:
        rows.append(evaluate(0))
    prog = Progress("ppo", cfg.steps)
    t0 = time.time()
    for step in range(start + 1, cfg.steps + 1):
        # ---- rollout: sample completions from the current policy
        idx = draw_batch()
        prompts = [train_prompts[i] for i in idx]
        x = encode(prompts)
        P = x.shape[1]
        with torch.no_grad():
            with autocast():
                # the rollout's log-probs and hidden states come from the sampler itself
                y, old_logp, h = sample(policy, x, completion_tokens, banned=banned, generator=g, return_scores=True)
                seq = torch.cat([x, y], 1)
                # pi_init's log-probs enter the reward only through the penalty
                ref_logp = ref_logprobs(seq, P) if cfg.kl_penalty else old_logp
            old_v = value(h.float())  # the value head in float32, as in the updates below
            # ---- reward: proxy score of the whole text at the last token, KL penalty per token
            texts = decode_ids(tok, y.cpu())
            r_proxy = torch.tensor(reward_fn(prompts, texts), dtype=torch.float32, device=dev)
            tok_rewards = -cfg.kl_penalty * (old_logp - ref_logp)
            tok_rewards[:, -1] += r_proxy
            adv, returns = gae(tok_rewards, old_v, cfg.gamma, cfg.gae_lambda)
            # advantage whitening: one scale for every batch whatever the reward's scale
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        # ---- optimise: a few epochs of minibatch updates on the clipped objective
        policy.train()
        diag = []
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.batch_size, generator=g, device=g.device)
            for mb in order.split(cfg.minibatch_size):
                with autocast():
                    logp, hm, ent = masked_logprobs(policy, seq[mb], P, banned, return_hidden=True, return_entropy=True)
                pg_loss = clipped_policy_loss(logp, old_logp[mb], adv[mb], cfg.clip)
                # trust region to the rollout policy (the PPO paper's KL-penalised objective, beside the
                # clip): each update then approximates a mirror-descent step, and the path from pi_init
                # stays near the family pi_init exp(r / beta) that a KL penalty to pi_init converges to.
                # Without it Adam's steps spend KL that buys neither proxy nor gold: gold by d 1.8
                # 0.46 -> 0.89 (357k proxy, seed 0; docs/world.md, entry 13)
                trust = cfg.trust_kl * rollout_kl(logp, old_logp[mb]).mean() if cfg.trust_kl else torch.zeros(())
                # value head on detached features: the value loss cannot move the policy
                v_loss = F.mse_loss(value(hm.detach().float()), returns[mb])
                loss = pg_loss + trust + cfg.vf_coef * v_loss
                opt.zero_grad()
                loss.backward()
                # gradient clipping keeps one bad batch from wrecking a small policy
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    log_r = logp.detach() - old_logp[mb]
                    diag.append([float(((log_r.exp() - 1) - log_r).mean()),  # approx KL (CleanRL's k3)
                                 float(((log_r.exp() - 1).abs() > cfg.clip).float().mean()),
                                 float(pg_loss), float(v_loss), float(trust), float(ent.mean()), float(grad_norm)])
        # explained variance of the rollout's value estimates: 1 is a perfect baseline, <= 0 none
        var = returns.var()
        d = np.mean(diag, 0)
        updates.append({"step": step, "approx_kl": d[0], "clip_frac": d[1], "policy_loss": d[2], "value_loss": d[3],
                        "trust_term": d[4], "entropy": d[5], "grad_norm": d[6],
                        "explained_var": float(1 - (returns - old_v).var() / var) if var > 0 else float("nan"),
                        "proxy": float(r_proxy.mean())})
        policy.eval()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rows.append(evaluate(step))
            log.info("step %d sample: %r", step, texts[0])
        prog(step, proxy=float(r_proxy.mean()), kl=rows[-1]["kl"], gold=rows[-1]["gold"])
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(ckpt, step, policy, value, opt, g, rng, rows, fingerprint, updates)
    if by_prompt_out:
        per = pd.DataFrame([{"step": r["step"], "prompt": i, "gold": g, "proxy": q} for r in rows
                            for i, (g, q) in enumerate(zip(r["gold_by_prompt"], r["proxy_by_prompt"]))])
        with atomic_file(by_prompt_out) as tmp:
            with_keys(per, keys or {}).to_csv(tmp, index=False)
    df = pd.DataFrame(rows)
    # the sampled KL estimate is unbiased but can dip below 0 near pi_init; d takes the clipped value
    df.insert(2, "d", np.sqrt(df["kl"].clip(lower=0.0)))
    df = with_keys(df[["step", "kl", "d", "gold", "gold_se", "proxy", "proxy_se"]], keys or {})
    log.info("ppo: %.3f steps/s over %d steps", (cfg.steps - start) / max(time.time() - t0, 1e-9), cfg.steps - start)
    if updates_out:
        with atomic_file(updates_out) as tmp:
            pd.DataFrame(updates).to_csv(tmp, index=False)
    with atomic_file(out) as tmp:
        df.to_csv(tmp, index=False)
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("ppo done: %s", json.dumps(asdict(cfg)))
    return df
