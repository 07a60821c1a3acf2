"""`overopt plan`: what a config will run, what each GPU job costs and asks for, before running it.

The job list follows the workflow's own grid (`config.cell_seeds`, `config.rl_cells`, shards of
`bon.shard_prompts`). Each job's cost is a FLOP count turned into time at a stated throughput, and
a GPU memory estimate; the workflow's rules request `runtime` and `gpu_mem_mb` from the same
numbers (`job_cost`, `requested_minutes`), so what `plan` prints is what SLURM is asked for.

- FLOPs: a forward pass costs 2P per token, a training step (forward + backward) 6P per token
  (Kaplan et al. 2020); LoRA is counted as full training, an upper bound; a sampled token costs one
  forward pass (a KV cache). Prompts are `world.prompt_chars / 4` tokens (about 4 characters per
  token of English BPE; the tiny world's tokens are characters).
- Time: the GPU sustains `cluster.mfu` of `cluster.peak_tflops`. Sampling is memory-bound and runs
  below that, so generation-heavy jobs (pool, pairs) are the least reliable lines; the requested
  runtime is the estimate times `cluster.safety`.
- GPU memory: weights (4 bytes per parameter; 1 or 0.5 for a frozen model quantized to 8 or 4
  bits), Adam's state and gradients for trained weights (12 more bytes per parameter), training
  activations of 34 bytes per token per unit of width x layers (Korthikanti et al. 2022, bf16,
  no recomputation), a KV cache of 4 bytes per token per unit of width x layers when sampling, and
  float32 logits over a 50,304-token vocabulary where log-probabilities are taken. Width x layers
  is sqrt(2P) (the shape of a 24-layer model, P = 12 layers x width^2), an overestimate for
  shallower models.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .config import cell_seeds, gold_part_range, label_part_count, label_parts, model_params, rl_cells, rl_runs, rl_seeds
from .batches import LOGLIK, SCORE

CHARS_PER_TOKEN = 4
UNKNOWN_PARAMS = 1_000_000_000  # a hub id with no `params:` and no local config.json
VOCAB = 50_304  # GPT-NeoX / Pythia; logits are the largest activation of a log-prob pass
GOLD_BATCH = 64  # gold.HFGold's batch
GIB = 2**30


def _params(spec: dict) -> int:
    return model_params(spec) or UNKNOWN_PARAMS


@dataclass
class Job:
    rule: str
    key: tuple  # the rule's wildcards, in the rule's order
    flops: float = 0.0
    gpu_bytes: float = 0.0  # 0 for a job that runs on CPU
    deps: list = field(default_factory=list)  # (rule, key) of the jobs it waits on


class Costs:
    """Per-job FLOPs and GPU memory of a validated config: one source for `plan` and the rules."""

    def __init__(self, cfg: dict):
        self.cfg, self.models = cfg, cfg["models"]
        self.P = {m: _params(s) for m, s in self.models.items()}
        gold = cfg["gold"]
        if "learned" in gold:
            self.Pg = self.P[gold["learned"]["base"]]
        elif "tiny" in gold:
            ref = gold["tiny"].get("reference")
            self.Pg = self.P[ref] if ref else 0  # an n-gram gold is a table lookup
        else:
            self.Pg = _params(gold)
        policies = cfg["policies"]
        self.cpt = 1 if all("tiny" in self.models[p] for p in policies) else CHARS_PER_TOKEN
        self.prompt_tokens = cfg["world"]["prompt_chars"] / self.cpt
        self.seq = self.prompt_tokens + cfg["world"]["completion_tokens"]
        c = cfg["cluster"]
        self.rate = c["mfu"] * c["peak_tflops"] * 1e12
        # a policy's comparison sample: its cells' largest data size, and the validation pairs
        # and of it, the pairs one base's proxies read (that base's log-likelihood table)
        self.train_pairs, self.base_pairs = {}, {}
        for p, r, d in cell_seeds(cfg):
            self.train_pairs[p] = max(self.train_pairs.get(p, 0), d)
            self.base_pairs[p, r] = max(self.base_pairs.get((p, r), 0), d)

    # ---- which jobs hold a GPU, and what a model costs in memory
    def on_gpu(self, *models: str) -> bool:
        return any("tiny" not in self.models[m] for m in models if m != "gold") or (
            "gold" in models and "hf" in self.cfg["gold"])

    def _hl(self, m: str) -> float:
        return math.sqrt(2 * (self.Pg if m == "gold" else self.P[m]))

    def _weights(self, m: str, frozen: bool) -> float:
        spec = self.cfg["gold"] if m == "gold" else self.models[m]
        n = self.Pg if m == "gold" else self.P[m]
        q = spec.get("quantize", "none") if frozen else "none"
        return n * {"none": 4, "8bit": 1, "4bit": 0.5}[q]

    def _trained(self, m: str, tokens: float, full: bool | None = None) -> float:
        """Weights, gradients and Adam's state (the base frozen under LoRA), and activations."""
        full = not self.models[m].get("lora") if full is None else full
        return self.P[m] * (16 if full else 4) + 34 * tokens * self._hl(m) + 3 * 4 * tokens * VOCAB

    def _kv(self, m: str, batch: float) -> float:
        return 4 * batch * self.seq * self._hl(m)

    def _logits(self, batch: float) -> float:
        return 4 * batch * self.seq * VOCAB

    def pool_prompts(self, shard: int | None) -> int:
        """Prompts in one pool job: a shard's, or the whole pool's."""
        P, S = self.cfg["bon"]["prompts"], self.cfg["bon"].get("shard_prompts")
        if shard is None or not S:
            return P
        return min(S, P - shard * S)

    def pool_tokens(self, prompts: int) -> float:
        """Tokens a scorer reads over a pool: each prompt once (its keys/values reused), every completion."""
        return prompts * (self.prompt_tokens + self.cfg["bon"]["samples"] * self.cfg["world"]["completion_tokens"])

    def job(self, rule: str, policy=None, rm=None, data=None, shard=None) -> tuple[float, float]:
        """(FLOPs, GPU bytes) of one job of `rule` (shard rules: `shard`, the shard's index; labels:
        the part's)."""
        cfg, P, Pg, seq = self.cfg, self.P, self.Pg, self.seq
        cmp, bon, tr, rl = cfg["comparisons"], cfg["bon"], cfg["rm_train"], cfg["rl"]
        pairs = self.train_pairs.get(policy, cmp["train_pairs"]) + cmp["val_pairs"]
        reads = 2 if tr.get("base_loglik") else 1
        base = rule.removesuffix("_shard")
        n_pool = self.pool_prompts(shard) * bon["samples"]
        if base == "sft":
            sft = cfg["sft"]
            tokens = sft["batch_size"] * sft["seq_len"]
            return sft["steps"] * tokens * 6 * P[policy], self._gpu(policy, mem=self._trained(policy, tokens, full=True))
        if base == "gold_rm_pairs":  # the learned gold's comparisons, sampled like a policy's
            lp = cfg["gold"]["learned"]
            return 2 * (lp["pairs"] + lp["val_pairs"]) * seq * 2 * P[policy], self._gpu(
                policy, mem=self._weights(policy, True) + self._kv(policy, cmp["batch_size"]))
        if base == "gold_rm":  # the learned gold's training, as a proxy's
            lp = cfg["gold"]["learned"]
            return lp["epochs"] * 2 * lp["pairs"] * seq * 6 * P[rm], self._gpu(
                rm, mem=self._trained(rm, 2 * lp["batch_size"] * seq))
        if base == "pairs":
            return 2 * pairs * seq * 2 * P[policy], self._gpu(policy, mem=self._weights(policy, True)
                                                              + self._kv(policy, cmp["batch_size"]))
        if base == "labels":  # `shard`: the part's index
            part = sum(hi - lo for lo, hi in label_parts(cfg, policy)[shard])
            return 2 * part * seq * 2 * Pg, self._gpu("gold", mem=self._weights("gold", True) + self._kv("gold", GOLD_BATCH))
        if base == "pool":
            return n_pool * seq * 2 * P[policy], self._gpu(policy, mem=self._weights(policy, True)
                                                           + self._kv(policy, bon["batch_size"]))
        if base == "score_gold_part":  # `shard`: the part's index
            lo, hi = gold_part_range(cfg, shard)
            n_pool = (hi - lo) * bon["samples"]
        if base in ("score_gold", "score_gold_part"):
            return n_pool * seq * 2 * Pg, self._gpu("gold", mem=self._weights("gold", True) + self._kv("gold", GOLD_BATCH))
        if base == "loglik_pairs":
            read = self.base_pairs.get((policy, rm), cmp["train_pairs"]) + cmp["val_pairs"]
            return 2 * read * seq * 2 * P[rm], self._gpu(rm, mem=self._weights(rm, True) + self._logits(LOGLIK["cuda"]))
        if base == "loglik_pool":
            return self.pool_tokens(self.pool_prompts(shard)) * 2 * P[rm], self._gpu(
                rm, mem=self._weights(rm, True) + self._logits(LOGLIK["cuda"]))
        if base == "score_proxy":
            return self.pool_tokens(self.pool_prompts(shard)) * 2 * P[rm], self._gpu(
                rm, mem=self._weights(rm, True) + self._kv(rm, SCORE["cuda"]))
        if base == "train_rm":
            flops = tr["epochs"] * 2 * data * seq * 6 * P[rm] + 2 * cmp["val_pairs"] * seq * 2 * P[rm]
            return flops, self._gpu(rm, mem=self._trained(rm, 2 * tr["batch_size"] * seq)
                                    + (self._weights(rm, True) if tr.get("base_loglik") else 0))
        if base == "ppo":
            steps, batch, epochs = rl["steps"], rl["batch_size"], rl["epochs"]
            n_eval = steps // rl["eval_every"] + 1
            ev = rl["eval_prompts"] * rl["eval_samples"]
            step = batch * seq * (2 * P[policy] * 3 + reads * 2 * P[rm] + epochs * 6 * P[policy])
            evals = n_eval * ev * seq * (2 * P[policy] * 3 + reads * 2 * P[rm] + 2 * Pg)
            ref = 0 if self.models[policy].get("lora") else self._weights(policy, True)
            mem = (self._trained(policy, rl["minibatch_size"] * seq) + ref + self._kv(policy, max(batch, ev))
                   + self._weights(rm, True) * reads + self._weights("gold", True))
            return steps * step + evals, self._gpu(policy, rm, "gold", mem=mem)
        return 0.0, 0.0  # merges, tables, fits and figures: no model

    def _gpu(self, *models: str, mem: float) -> float:
        return mem if self.on_gpu(*models) else 0.0

    def hours(self, flops: float) -> float:
        return flops / self.rate / 3600


def requested_minutes(cfg: dict, flops: float, attempt: int = 1) -> int:
    """A GPU job's runtime request: its estimate x `cluster.safety`, at least 10 minutes, doubled
    per attempt, never above the site's `cluster.max_runtime_h`."""
    c = cfg["cluster"]
    est = flops / (c["mfu"] * c["peak_tflops"] * 1e12) / 60
    return int(min(max(10.0, est * c["safety"]) * 2 ** (attempt - 1), c["max_runtime_h"] * 60))


def jobs_of(cfg: dict) -> list[Job]:
    """Every job of the study with its cost and the jobs it waits on, as the rules wire them."""
    costs, models = Costs(cfg), cfg["models"]
    seeds_of, rl = cell_seeds(cfg), rl_cells(cfg)
    bon = "bon" in cfg["methods"]
    S = cfg["bon"].get("shard_prompts")
    shards = list(range(math.ceil(cfg["bon"]["prompts"] / S))) if S else [None]
    rep = lambda key, s: f".r{s}" if cfg["replicates"][key] else ""
    cells = list(seeds_of)
    policies = sorted({p for p, _, _ in cells})
    used = set(policies) | {r for _, r, _ in cells}
    tiny = {m for m in used if "tiny" in models[m]}
    gold_ref = cfg["gold"].get("tiny", {}).get("reference")
    learned = cfg["gold"].get("learned")
    tiny |= {m for m in (gold_ref, learned and learned["base"]) if m and "tiny" in models[m]}
    jobs: list[Job] = []

    def add(rule, key, deps=(), **w):
        flops, mem = costs.job(rule, **w)
        jobs.append(Job(rule, key, flops, mem, list(deps)))
        return (rule, key)

    def base(m):
        return ("pretrain", (m,)) if m in tiny else ("model_spec", (m,))

    for m in sorted(used - tiny):
        add("model_spec", (m,))
    if tiny:
        add("tokenizer", ())
        for m in sorted(tiny):
            add("pretrain", (m,), [("tokenizer", ())])
    prompts = [add("prompts", ())] if cfg["world"].get("prompts") else []
    gold = add("gold", (), [base(gold_ref)] if gold_ref else [])
    pi_init = {p: add("sft", (p,), [base(p)], policy=p) if cfg.get("sft") else base(p)
               for p in sorted(set(policies) | ({learned["policy"]} if learned else set()))}
    if learned:  # the hand-written gold above is the teacher of a learned gold RM
        pairs = add("gold_rm_pairs", (), [pi_init[learned["policy"]], *prompts], policy=learned["policy"])
        labels = add("gold_rm_labels", (), [pairs, gold])
        gold = add("gold_learned", (), [add("gold_rm", (), [base(learned["base"]), labels], rm=learned["base"])])
    scored = {c: (seeds if bon else rl_seeds(cfg, seeds) if c in rl else []) for c, seeds in seeds_of.items()}
    cmp_sets = sorted({(p, rep("comparisons", s)) for (p, r, d), seeds in seeds_of.items() for s in seeds})
    pool_sets = {(p, rep("pool", s)) for (p, r, d), seeds in scored.items() for s in seeds}
    pool_sets |= {(p, rep("pool", s)) for p, r, d, _ in rl_runs(cfg) for s in rl_seeds(cfg, seeds_of[(p, r, d)])}
    for p, rp in cmp_sets:
        pairs = add("pairs", (p, rp), [pi_init[p], *prompts], policy=p)
        parts = [add("labels", (p, rp, k), [pairs, gold], policy=p, shard=k) for k in range(label_part_count(cfg, p))]
        add("comparisons", (p, rp), parts)

    def sharded(rule, key, deps_of, merge=True, **w):
        """One job per shard and a merge (or the one whole job): the (rule, key) downstream reads.
        `merge=False`: the shards only (a merged pool is made only where PPO reads it)."""
        if shards == [None]:
            return add(rule, key, deps_of(None), **w)
        parts = [add(f"{rule}_shard", (*key, k), deps_of(k), shard=k, **w) for k in shards]
        return add(MERGE[rule], key, parts) if merge else None

    rl_pools = {(p, rep("pool", s)) for p, r, d, _ in rl_runs(cfg) for s in rl_seeds(cfg, seeds_of[(p, r, d)])}
    pool_job, gold_job = {}, {}
    for p, rp in sorted(pool_sets):
        pool_part = lambda k, p=p, rp=rp: ("pool_shard", (p, rp, k)) if k is not None else ("pool", (p, rp))
        pool_job[(p, rp)] = sharded("pool", (p, rp), lambda k, p=p: [pi_init[p], *prompts], (p, rp) in rl_pools, policy=p)
        if shards == [None]:  # the whole pool's gold in parts of consecutive prompts, merged
            parts = [add("score_gold_part", (p, rp, k), [pool_job[(p, rp)], gold], shard=k)
                     for k in range(cfg["bon"]["gold_parts"])]
            gold_job[(p, rp)] = add("merge_gold", (p, rp), parts)
        else:
            gold_job[(p, rp)] = sharded("score_gold", (p, rp), lambda k, pp=pool_part: [pp(k), gold])
    tr = cfg["rm_train"]
    if tr.get("base_loglik"):
        for p, r, rp in sorted({(p, r, rep("comparisons", s)) for (p, r, d), seeds in seeds_of.items() for s in seeds}):
            add("loglik_pairs", (p, r, rp), [base(r), ("pairs", (p, rp))], policy=p, rm=r)
        for p, r, rp in sorted({(p, r, rep("pool", s)) for (p, r, d), seeds in scored.items() for s in seeds}):
            pool_part = lambda k, p=p, rp=rp: ("pool_shard", (p, rp, k)) if k is not None else ("pool", (p, rp))
            # sharded, each proxy shard reads its own table: no merge
            sharded("loglik_pool", (p, r, rp), lambda k, pp=pool_part, r=r: [base(r), pp(k)], merge=False, rm=r)
    rm_job, score_job = {}, {}
    for (p, r, d), seeds in seeds_of.items():
        for s in seeds:
            cp, pp_ = rep("comparisons", s), rep("pool", s)
            parts = [("labels", (p, cp, k)) for k in range(label_part_count(cfg, p, d))]
            deps = [base(r), *parts] + ([("loglik_pairs", (p, r, cp))] if tr.get("base_loglik") else [])
            rm_job[(p, r, d, s)] = add("train_rm", (p, r, d, s), deps, rm=r, data=d)
            if s in scored[(p, r, d)]:
                def score_deps(k, p=p, r=r, d=d, s=s, pp_=pp_):
                    part = ("pool_shard", (p, pp_, k)) if k is not None else ("pool", (p, pp_))
                    ll = [] if not tr.get("base_loglik") else [
                        ("loglik_pool_shard", (p, r, pp_, k)) if k is not None else ("loglik_pool", (p, r, pp_))]
                    # whole-pool scoring joins the gold itself; sharded, the merge does
                    return [part, rm_job[(p, r, d, s)], *ll] + ([gold_job[(p, pp_)]] if k is None else [])
                key = (p, r, d, s)
                score_job[key] = sharded("score_proxy", key, score_deps, rm=r)
                if shards != [None]:
                    jobs[-1].deps.append(gold_job[(p, pp_)])
                if bon:
                    add("bon_curve", key, [score_job[key]])
    for p, r, d, kl in rl_runs(cfg):
        for s in rl_seeds(cfg, seeds_of[(p, r, d)]):
            pp_ = rep("pool", s)
            add("ppo", (p, r, d, kl, s), [pi_init[p], rm_job[(p, r, d, s)], gold, pool_job[(p, pp_)], gold_job[(p, pp_)],
                                          score_job[(p, r, d, s)], *prompts], policy=p, rm=r, data=d)
    everything = [(j.rule, j.key) for j in jobs]
    aggregate = ["rm_table"] + (["fit_bon", "fig_bon"] if bon else []) + (["fit_rl", "fig_rl"] if rl else [])
    if len(cfg["reward_models"]) > 1:
        aggregate.append("scaling")
    if bon:
        aggregate += ["figures", "findings", "summary"]
    if len(cfg["reward_models"]) > 2:
        aggregate.append("forecast")
    for rule in aggregate:
        add(rule, (), everything)
    return jobs


MERGE = {"pool": "merge_pool", "score_gold": "merge_gold", "score_proxy": "merge_scores"}


def critical_path(jobs: list[Job], hours) -> tuple[float, list[Job]]:
    """The longest chain of jobs by estimated hours (every job on its own GPU at once)."""
    by_id = {(j.rule, j.key): j for j in jobs}
    best: dict = {}

    def finish(jid):
        if jid not in best:
            j = by_id[jid]
            prev = max((finish(d) for d in j.deps), key=lambda x: x[0], default=(0.0, []))
            best[jid] = (prev[0] + hours(j), prev[1] + [j])
        return best[jid]

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(jobs) + 100))
    return max((finish(jid) for jid in by_id), key=lambda x: x[0])


def plan(cfg: dict) -> dict:
    """Job counts, FLOPs, GPU-hours, runtime and GPU memory per rule, the critical path, and every
    job that cannot fit the GPU or the runtime cap (`refused`)."""
    costs, c = Costs(cfg), cfg["cluster"]
    jobs = jobs_of(cfg)
    count, flops = Counter(), Counter()
    longest, memory = defaultdict(float), defaultdict(float)
    refused = []
    for j in jobs:
        count[j.rule] += 1
        if j.flops:
            flops[j.rule] += j.flops
        on_gpu = j.gpu_bytes > 0
        if on_gpu:
            h = costs.hours(j.flops)
            longest[j.rule] = max(longest[j.rule], h)
            memory[j.rule] = max(memory[j.rule], j.gpu_bytes)
            name = job_name(j)
            if j.gpu_bytes > c["gpu_memory_gb"] * GIB:
                refused.append(f"{name}: needs about {j.gpu_bytes / GIB:.0f} GB of GPU memory, the GPU has "
                               f"{c['gpu_memory_gb']:g} GB (cluster.gpu_memory_gb)")
            if h * c["safety"] > c["max_runtime_h"]:
                refused.append(f"{name}: {h:.1f} GPU-hours x safety {c['safety']:g} exceed the longest runtime, "
                               f"{c['max_runtime_h']:g} h (cluster.max_runtime_h): set or lower bon.shard_prompts"
                               + (" or raise bon.gold_parts" if j.rule == "score_gold_part" else ""))
    gpu_hours = {k: costs.hours(v) for k, v in flops.items()}
    # every job at the table's rate, as the GPU-hours column counts them (the tiny world's run on CPU)
    path_h, path = critical_path(jobs, lambda j: costs.hours(j.flops))
    used = sorted({m for j in jobs if j.rule in ("pairs", "pool", "pool_shard", "train_rm") for m in (j.key[:2])
                   if m in cfg["models"]}, key=lambda m: (costs.P[m], m))
    gold = cfg["gold"]
    return {"jobs": dict(count), "flops": dict(flops), "gpu_hours": gpu_hours, "longest_h": dict(longest),
            "runtime_min": {r: requested_minutes(cfg, h * costs.rate * 3600) for r, h in longest.items()},
            "gpu_gb": {r: m / GIB for r, m in memory.items()},
            "critical_h": path_h, "critical_path": [job_name(j) for j in path if j.flops > 0],
            "refused": refused, "cluster": dict(c),
            "seq_tokens": costs.seq, "prompt_tokens": costs.prompt_tokens, "chars_per_token": costs.cpt,
            "completion_tokens": cfg["world"]["completion_tokens"], "params": {m: costs.P[m] for m in used},
            "gold_params": costs.Pg,
            "gold_quantize": gold.get("quantize", "none") if "hf" in gold else "tiny",
            "lora": sorted(m for m in used if cfg["models"][m].get("lora")),
            "unknown_params": sorted(m for m in used if model_params(cfg["models"][m]) is None)}


def job_name(j: Job) -> str:
    """The job as Snakemake's wildcards name it (a shared replicate's empty `rep` left out)."""
    return f"{j.rule}({', '.join(str(k) for k in j.key if k != '')})"


def _n(x: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:g}"


def format_plan(p: dict) -> str:
    c = p["cluster"]
    lines = [f"{'rule':<18}{'jobs':>6}{'PFLOP':>11}{'GPU-hours':>11}{'longest job':>13}{'runtime asked':>15}{'GPU memory':>12}"]
    for rule, n in p["jobs"].items():
        f = p["flops"].get(rule)
        line = f"{rule:<18}{n:>6}"
        if f:
            line += f"{f / 1e15:>11,.1f}{p['gpu_hours'][rule]:>11,.1f}"
        if rule in p["longest_h"]:
            line += f"{p['longest_h'][rule]:>11,.2f} h{p['runtime_min'][rule]:>11,} min{p['gpu_gb'][rule]:>9,.1f} GB"
        lines.append(line.rstrip())
    total_h = sum(p["gpu_hours"].values())
    lines.append(f"{'total':<18}{sum(p['jobs'].values()):>6}{sum(p['flops'].values()) / 1e15:>11,.1f}{total_h:>11,.1f}")
    lines.append(f"critical path: {p['critical_h']:,.1f} GPU-hours ({p['critical_h'] / total_h:.0%} of the total),"
                 f" {' -> '.join(p['critical_path'])}" if total_h else "critical path: no GPU job")
    lines += [
        "assumptions:",
        f"  GPU: {c['mfu']:.0%} model FLOP utilisation of {c['peak_tflops']:g} TFLOP/s peak"
        f" = {c['mfu'] * c['peak_tflops']:.4g} TFLOP/s sustained, {c['gpu_memory_gb']:g} GB per GPU (cluster:)",
        f"  runtime asked: the longest job's estimate x {c['safety']:g}, at least 10 min, at most {c['max_runtime_h']:g} h",
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
    for r in p["refused"]:
        lines.append(f"refused: {r}")
    return "\n".join(lines) + "\n"
