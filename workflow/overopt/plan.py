"""`overopt plan`: what a config will run, and roughly how many GPU hours, before running it.

Job counts follow the workflow's own grid (`config.cell_seeds`, `config.rl_cells`). The cost is a
FLOP count turned into time at a stated throughput, not a measurement:

- a forward pass costs 2P FLOPs per token, a training step (forward + backward) 6P per token
  (Kaplan et al. 2020); LoRA is counted as full training, an upper bound;
- a sampled token costs one forward pass (a KV cache: the prompt is read once, each new token once);
- prompts are `world.prompt_chars / 4` tokens (about 4 characters per token of English BPE; the
  tiny world's tokens are characters);
- the GPU sustains `mfu` of its peak (default 40% of an A100's 312 TFLOP/s in bf16). Sampling is
  memory-bound and runs well below that, so generation-heavy jobs (pool, comparisons) are the
  least reliable lines: read the total as a lower bound within a factor of about two.
"""

from __future__ import annotations

from collections import Counter

from .config import cell_seeds, model_params, rl_cells, rl_runs, rl_seeds

CHARS_PER_TOKEN = 4
UNKNOWN_PARAMS = 1_000_000_000  # a hub id with no `params:` and no local config.json


def _params(spec: dict) -> int:
    return model_params(spec) or UNKNOWN_PARAMS


def _gold_params(cfg: dict) -> int:
    gold = cfg["gold"]
    if "tiny" in gold:
        # an n-gram gold (or one without a fluency term) is a table lookup: no FLOPs to speak of
        ref = gold["tiny"].get("reference")
        return _params(cfg["models"][ref]) if ref else 0
    return _params(gold)


def plan(cfg: dict, mfu: float = 0.4, peak_tflops: float = 312.0) -> dict:
    """Job counts per rule and FLOPs per rule for a validated config."""
    models, seeds_of = cfg["models"], cell_seeds(cfg)
    cells, rl = list(seeds_of), rl_cells(cfg)
    bon = "bon" in cfg["methods"]
    policies = sorted({p for p, _, _ in cells})
    used = set(policies) | {r for _, r, _ in cells}
    tiny = {m for m in used if "tiny" in models[m]}
    if cfg["gold"].get("tiny", {}).get("reference"):
        tiny.add(cfg["gold"]["tiny"]["reference"])
    P = {m: _params(models[m]) for m in models}
    Pg = _gold_params(cfg)
    # the tiny world's tokens are characters; hf tokenizers average about CHARS_PER_TOKEN
    cpt = 1 if all("tiny" in models[p] for p in policies) else CHARS_PER_TOKEN
    prompt_tokens = cfg["world"]["prompt_chars"] / cpt
    seq = prompt_tokens + cfg["world"]["completion_tokens"]

    jobs, flops = Counter(), Counter()
    jobs["model_spec"] = len(used - tiny)
    if tiny:
        jobs["tokenizer"], jobs["pretrain"] = 1, len(tiny)
    if cfg["world"].get("prompts"):
        jobs["prompts"] = 1
    jobs["gold"] = 1
    cmp = cfg["comparisons"]
    pairs = cmp["train_pairs"] + cmp["val_pairs"]
    # replicates that redraw the comparisons or the pool have their own files (replicate = seed)
    rep = lambda key, s: s if cfg["replicates"][key] else 0
    scored = {c: (seeds if bon else rl_seeds(cfg, seeds) if c in rl else []) for c, seeds in seeds_of.items()}
    cmp_sets = {(p, rep("comparisons", s)) for (p, r, d), seeds in seeds_of.items() for s in seeds}
    pool_sets = {(p, rep("pool", s)) for (p, r, d), seeds in scored.items() for s in seeds}
    pool_sets |= {(p, rep("pool", s)) for p, r, d, _ in rl_runs(cfg) for s in rl_seeds(cfg, seeds_of[(p, r, d)])}
    for p, _ in sorted(cmp_sets):
        jobs["pairs"] += 1
        jobs["comparisons"] += 1
        flops["pairs"] += 2 * pairs * seq * 2 * P[p]  # two samples per prompt
        flops["comparisons"] += 2 * pairs * seq * 2 * Pg  # the gold scores both
    pool_samples = cfg["bon"]["prompts"] * cfg["bon"]["samples"]
    for p, _ in sorted(pool_sets):
        jobs["pool"] += 1
        jobs["score_gold"] += 1
        flops["pool"] += pool_samples * seq * 2 * P[p]
        flops["score_gold"] += pool_samples * seq * 2 * Pg
    tr = cfg["rm_train"]
    # the base-likelihood readout: one forward pass of each proxy base over its policy's pairs and
    # pool (`loglik` tables, shared by every data size), and one more per text PPO scores
    reads = 2 if tr.get("base_loglik") else 1
    pool_tokens = cfg["bon"]["prompts"] * prompt_tokens + pool_samples * cfg["world"]["completion_tokens"]
    if tr.get("base_loglik"):
        for p, r, _ in {(p, r, rep("comparisons", s)) for (p, r, d), seeds in seeds_of.items() for s in seeds}:
            jobs["loglik_pairs"] += 1
            flops["loglik_pairs"] += 2 * pairs * seq * 2 * P[r]
        for p, r, _ in {(p, r, rep("pool", s)) for (p, r, d), seeds in scored.items() for s in seeds}:
            jobs["loglik_pool"] += 1
            flops["loglik_pool"] += pool_tokens * 2 * P[r]
    for (p, r, d), seeds in seeds_of.items():
        # a pool is scored by every proxy for best-of-n, else by those PPO runs use (their offset)
        for s in seeds:
            jobs["train_rm"] += 1
            flops["train_rm"] += tr["epochs"] * 2 * d * seq * 6 * P[r] + 2 * cmp["val_pairs"] * seq * 2 * P[r]
            if s in scored[(p, r, d)]:
                jobs["score_proxy"] += 1
                # each pool prompt is read once, its keys/values reused for its N completions
                flops["score_proxy"] += pool_tokens * 2 * P[r]
            if bon:
                jobs["bon_curve"] += 1
    r_cfg = cfg["rl"]
    steps, batch, epochs = r_cfg["steps"], r_cfg["batch_size"], r_cfg["epochs"]
    n_eval = steps // r_cfg["eval_every"] + 1
    ev = r_cfg["eval_prompts"] * r_cfg["eval_samples"]
    for p, r, d, _ in rl_runs(cfg):
        for _ in rl_seeds(cfg, seeds_of[(p, r, d)]):
            jobs["ppo"] += 1
            # rollout: sample, log-probs under policy and pi_init, proxy score; then training epochs
            step = batch * seq * (2 * P[p] * 3 + reads * 2 * P[r] + epochs * 6 * P[p])
            evals = n_eval * ev * seq * (2 * P[p] * 3 + reads * 2 * P[r] + 2 * Pg)
            flops["ppo"] += steps * step + evals
    aggregate = ["rm_table"] + (["fit_bon", "fig_bon"] if bon else []) + (["fit_rl", "fig_rl"] if rl else [])
    if len(cfg["reward_models"]) > 1:
        aggregate.append("scaling")
    if bon:
        aggregate += ["figures", "findings", "summary"]
    if len(cfg["reward_models"]) > 2:
        aggregate.append("forecast")
    for rule in aggregate:
        jobs[rule] = 1
    rate = mfu * peak_tflops * 1e12
    gpu_hours = {k: v / rate / 3600 for k, v in flops.items()}
    sizes = {m: P[m] for m in sorted(used, key=lambda m: (P[m], m))}
    gold = cfg["gold"]
    return {"jobs": dict(jobs), "flops": dict(flops), "gpu_hours": gpu_hours, "mfu": mfu, "peak_tflops": peak_tflops,
            "seq_tokens": seq, "prompt_tokens": prompt_tokens, "chars_per_token": cpt,
            "completion_tokens": cfg["world"]["completion_tokens"], "params": sizes, "gold_params": Pg,
            "gold_quantize": gold.get("quantize", "none") if "hf" in gold else "tiny",
            "lora": sorted(m for m in used if models[m].get("lora")),
            "unknown_params": sorted(m for m in used if model_params(models[m]) is None)}


def _n(x: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:g}"


def format_plan(p: dict) -> str:
    lines = [f"{'rule':<14}{'jobs':>7}{'PFLOP':>12}{'GPU-hours':>12}"]
    for rule, n in p["jobs"].items():
        f = p["flops"].get(rule)
        lines.append(f"{rule:<14}{n:>7}" + (f"{f / 1e15:>12,.1f}{p['gpu_hours'][rule]:>12,.1f}" if f else ""))
    total_h = sum(p["gpu_hours"].values())
    lines.append(f"{'total':<14}{sum(p['jobs'].values()):>7}{sum(p['flops'].values()) / 1e15:>12,.1f}{total_h:>12,.1f}")
    lines += [
        "assumptions:",
        f"  GPU: {p['mfu']:.0%} model FLOP utilisation of {p['peak_tflops']:g} TFLOP/s peak (A100 bf16: 312)"
        f" = {p['mfu'] * p['peak_tflops']:.4g} TFLOP/s sustained per GPU",
        "  FLOPs per token: 6P training (forward + backward), 2P forward (sampling, scoring, log-probs);"
        " LoRA counted as full training (an upper bound)",
        f"  tokens per text: {p['prompt_tokens']:.0f} prompt ({p['chars_per_token']} character{'s' if p['chars_per_token'] > 1 else ''} per token)"
        f" + {p['completion_tokens']} completion = {p['seq_tokens']:.0f}",
        "  sampling is memory-bound and runs below this rate: read the total as a lower bound (about 2x)",
        "  models (P): " + ", ".join(f"{m} {_n(n)}" for m, n in p["params"].items())
        + f"; gold {_n(p['gold_params'])} ({p['gold_quantize']})"
        + (f"; LoRA: {', '.join(p['lora'])}" if p["lora"] else ""),
    ]
    if p["unknown_params"]:
        lines.append(f"no parameter count for {', '.join(p['unknown_params'])}: assumed {UNKNOWN_PARAMS:,} (set params:)")
    return "\n".join(lines) + "\n"
