# Validated config, wildcard constraints and target helpers. The only place config is read.
from overopt.config import (ConfigError, canonical, cell_seeds, gold_part_range, grid_cells, label_part_count,
                            label_parts, model_params, ppo_settings, rl_cells, rl_seeds, validate)
from overopt.config import rl_runs as rl_run_cells
from overopt.forkserver import Server
from overopt.plan import Costs, requested_minutes

try:
    CFG = validate(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

OUT = CFG["outdir"]
# one environment for every rule: the package and its dependencies (its post-deploy script
# installs this checkout), for `--software-deployment-method conda`
CONDA_ENV = "../../envs/overopt.yaml"
MODELS = CFG["models"]
# a local run's jobs fork from one process that imported torch (config fork_server)
FORK_SERVER = Server(".snakemake/log/overopt-fork-server.log")


def _one_of(names):
    """A wildcard that matches exactly one of `names` (so `pool/lm-m.gold.parquet` is never a policy)."""
    import re

    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    policy=_one_of(CFG["policies"]),
    rm=_one_of(CFG["reward_models"]),
    model=_one_of(MODELS),
    data=r"\d+",
    seed=r"\d+",
    kl=r"[0-9]+(\.[0-9]+)?(e-?[0-9]+)?",
    rep=r"(\.r\d+)?",  # "" where every replicate shares a file, ".r{seed}" where each draws its own
    shard=r"\d+",
    part=r"\d+",


def is_tiny(name):
    return "tiny" in MODELS[name]


def base_path(name):
    """The model ref a downstream job loads: the directory built here (tiny), or the spec file
    of an hf model (its id or path plus tokenizer, LoRA and quantization settings)."""
    return f"{OUT}/base/{name}" if is_tiny(name) else f"{OUT}/hf/{name}.json"


def base_input(name):
    """Snakemake input for a model: the pretraining target (tiny) or the spec file (hf)."""
    return [base_path(name)]


SFT = CFG["sft"]


def policy_path(name):
    """The ref of a policy's pi_init: its fine-tuned model's spec with `sft:`, else its base."""
    return f"{OUT}/sft/{name}.json" if SFT else base_path(name)


def policy_input(name):
    return [policy_path(name)]


def sft_demonstrations():
    """The demonstrations file SFT reads (none: the tiny world's corpus)."""
    demos = (SFT or {}).get("demonstrations")
    return [demos["path"]] if demos else []


PROMPTS = CFG["world"].get("prompts")
REPLICATES = CFG["replicates"]


def cmp_rep(seed):
    """The `rep` part of the comparison files a proxy of `seed` learns from."""
    return f".r{seed}" if REPLICATES["comparisons"] else ""


def pool_rep(seed):
    """The `rep` part of the pool that a proxy or PPO run of `seed` is scored or evaluated on."""
    return f".r{seed}" if REPLICATES["pool"] else ""


def rep_index(rep):
    """The replicate a `rep` wildcard names (0: the shared file)."""
    return int(rep[2:]) if rep else 0


SHARD = CFG["bon"]["shard_prompts"]  # prompts per shard of a pool; None: one job per pool (pool.smk)
N_SHARDS = -(-CFG["bon"]["prompts"] // SHARD) if SHARD else 0


def shard_range(shard):
    """Prompts lo..hi-1 of shard `shard` of a pool."""
    lo = int(shard) * SHARD
    return lo, min(lo + SHARD, CFG["bon"]["prompts"])


def shard_files(prefix, suffix):
    """Every shard's file of a pool (or of its scores): `prefix`/shard{k}`suffix`."""
    return [f"{prefix}/shard{k}{suffix}" for k in range(N_SHARDS)]


def gold_parts(w):
    """The files whose raw gold scores make a pool's gold: its shards' (shards.smk), else its
    `bon.gold_parts` parts (pool.smk)."""
    stem = f"{OUT}/pool/{w.policy}{w.rep}"
    if SHARD:
        return shard_files(stem, ".gold.parquet")
    return [f"{stem}.gold/part{k}.parquet" for k in range(CFG["bon"]["gold_parts"])]


def shard_benchmarks(stem):
    """The benchmark files of a pool job: `stem`.tsv, or `stem`/shard{k}.tsv of every shard."""
    return [f"{stem}/shard{k}.tsv" for k in range(N_SHARDS)] if SHARD else [f"{stem}.tsv"]


def prompt_input():
    """The prompts table when prompts come from a file; the tiny world draws from its corpus."""
    return [f"{OUT}/prompts.parquet"] if PROMPTS else []


def prompt_flag(wildcards, input):
    return f"--prompt-file {input.prompts}" if input.prompts else ""


# Scheduling. Snakemake starts the ready jobs of highest summed priority that fit the free cores.
# Every job waits on the gold's reference LM and the policies' bases; PPO runs are the longest
# jobs and wait on their proxies' training and pool scores, so that chain goes next; the other
# cells fill the gaps. Every tiny job but the gold's LM takes one thread: at these sizes two
# processes on two cores do more work than one process on both. The gold's LM takes two
# (`pretrain_threads`), and a priority above any two other jobs' together: two one-thread jobs
# would otherwise outrank it whenever two cores are free, and it would wait for the last of them.
GOLD_REF = CFG["gold"].get("tiny", {}).get("reference")
# the gold's own models: its reference LM, and with gold.learned the base of the gold RM
GOLD_MODELS = {GOLD_REF} | ({CFG["gold"]["learned"]["base"]} if "learned" in CFG["gold"] else set())
RL_CELLS = set(rl_cells(CFG))
CELL_SEEDS = cell_seeds(CFG)


def pretrain_priority(wildcards):
    return 10 if wildcards.model in GOLD_MODELS else 2 if wildcards.model in CFG["policies"] else 1


def pretrain_threads(wildcards):
    """The gold's LM heads the longest chain of jobs (every label, proxy and PPO run waits on it),
    so it takes 2 threads: 1.74x as fast on 2 (measured, docs/engine.md), the same weights on any
    number (`overopt.models`, tests/test_threads.py). A constant, so that a cluster job asks for
    what it uses; `--set-threads pretrain=N` gives it (and every pretraining job) N."""
    return 2 if wildcards.model in GOLD_MODELS else 1


def label_rows(policy, part):
    """The pair-id ranges of one labelling job (`config.label_parts`), as `--rows` takes them."""
    return " ".join(f"{lo}:{hi}" for lo, hi in label_parts(CFG, policy)[int(part)])


def label_part_files(policy, rep, data=None):
    """The labelled parts of a comparison set that a proxy of data size `data` reads (all without one)."""
    n = label_part_count(CFG, policy, data)
    return [f"{OUT}/comparisons/{policy}{rep}/part{k}.parquet" for k in range(n)]


def rl_chain_priority(wildcards):
    """Higher for the cells PPO runs on (their proxies and scores are PPO's inputs)."""
    return 2 if (wildcards.policy, wildcards.rm, int(wildcards.data)) in RL_CELLS else 1


def rm_lr(name):
    """The learning rate a proxy on base `name` trains at."""
    return CFG["rm_train"].get("lr_by_model", {}).get(name, CFG["rm_train"]["lr"])


def rm_readout_flags(name):
    """The base-likelihood readout's flags; its own lr only where it differs from the proxy's, so
    that setting `rm_train.readout_lr` reruns only the proxies it changes."""
    if not CFG["rm_train"]["base_loglik"]:
        return ""
    lr = CFG["rm_train"].get("readout_lr")
    return ("--base-loglik" + (f" --readout-lr {lr:g}" if lr is not None and lr != rm_lr(name) else "")
            + (" --readout-cap" if CFG["rm_train"]["readout_cap"] else ""))


def loglik_shard_input(wildcards):
    """A pool shard's likelihood table under the proxy's base, for proxies with the readout."""
    if not CFG["rm_train"]["base_loglik"]:
        return []
    return [f"{OUT}/loglik/{wildcards.policy}/{wildcards.rm}{pool_rep(wildcards.seed)}.pool/shard{wildcards.shard}.parquet"]


def loglik_input(wildcards, texts):
    """The proxy base's log-likelihood table of the comparison pairs or the pool, for proxies with
    the base-likelihood readout: made once per (policy, base, replicate), read by every data size."""
    if not CFG["rm_train"]["base_loglik"]:
        return []
    rep = cmp_rep(wildcards.seed) if texts == "pairs" else pool_rep(wildcards.seed)
    return [f"{OUT}/loglik/{wildcards.policy}/{wildcards.rm}{rep}.{texts}.parquet"]


def gpus(*names):
    """Jobs on real-scale models ask for one GPU; the tiny world runs on CPU."""
    return 0 if all(is_tiny(n) for n in names) else 1


def job_threads(*roles):
    """A GPU job's threads are the CPUs it reserves per GPU (`cluster.gpu_threads`: tokenising,
    data), and it uses them (`--threads`); a tiny job takes one."""

    def threads(wildcards):
        on_gpu = any("hf" in CFG["gold"] if r == "gold" else not is_tiny(getattr(wildcards, r)) for r in roles)
        return CFG["cluster"]["gpu_threads"] if on_gpu else 1

    return threads


def rm_dirs():
    return grid(f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}")


def _expand_cells(pattern, cells, seeds=None, **extra):
    """`pattern` for every (policy, rm, data) cell x its seeds (x any extra wildcard lists);
    `seeds(cell)` picks them, by default the cell's proxy seeds."""
    out = []
    for cell in cells:
        policy, rm, data = cell
        out += expand(pattern, policy=policy, rm=rm, data=data, seed=seeds(cell) if seeds else CELL_SEEDS[cell], **extra)
    return out


def grid(pattern):
    """`pattern` expanded over every cell of the study grid (the union of `subgrids`) x seed."""
    return _expand_cells(pattern, grid_cells(CFG))


def comparison_pairs(policy, rm=None):
    """Training pairs to sample for a policy: the largest data size any of its cells uses; with
    `rm`, the largest its proxies of that size read (their base's log-likelihood table)."""
    return max(d for p, r, d in grid_cells(CFG) if p == policy and (rm is None or r == rm))


def rl_runs(suffix=".csv"):
    """Every PPO run: the RL cells (rl.policies x rl.data_sizes within the grid) x kl_penalties
    (non-zero ones on rl.penalty_reward_models) x seeds; `suffix` picks the run's file."""
    return [f"{OUT}/rl/{p}/{r}/n{d}/kl{kl}/s{s}{suffix}" for p, r, d, kl in rl_run_cells(CFG)
            for s in rl_seeds(CFG, CELL_SEEDS[(p, r, d)])]


def rl_rm_dirs():
    """The proxies that PPO runs use."""
    return _expand_cells(f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}", rl_cells(CFG),
                         seeds=lambda cell: rl_seeds(CFG, CELL_SEEDS[cell]))


def rl_args(kl, seed):
    """PPO's settings as one JSON flag, plus the run's penalty and seed (a plain string: a stable param)."""
    return f"--settings '{canonical(ppo_settings(CFG))}' --kl-penalty {kl} --seed {seed}"


def multi_policy():
    """Policy-size figures need at least two policies sharing a grid cell."""
    cells = grid_cells(CFG)
    return any(len({p for p, r2, d2 in cells if (r2, d2) == (r, d)}) > 1 for _, r, d in cells)


def policy_params():
    """`name=params` for every policy: a plain string, so the param is stable across runs."""
    return " ".join(f"{p}={model_params(MODELS[p]) or 0}" for p in CFG["policies"])


def fig(name):
    """A paper figure as a report item: PNG in the report (its caption in workflow/report/), PDF beside it."""
    return report(f"{OUT}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")


def benchmark_files():
    """The `benchmark:` file of every heavy job the study runs (read by the summary's timing table)."""
    return [f for _, f in benchmark_pairs()]


def benchmark_labels():
    """`group=file` for every benchmark file (the group: its folder under benchmarks/), a plain string."""
    return " ".join(f"{g}={f}" for g, f in benchmark_pairs())


def benchmark_pairs():
    """(group, benchmark file) of every heavy job; the group names its folder under benchmarks/."""
    b = f"{OUT}/benchmarks"
    cells = grid_cells(CFG)
    policies = sorted({p for p, _, _ in cells})
    used = set(policies) | {r for _, r, _ in cells} | ({GOLD_REF} if GOLD_REF else set())
    used |= {CFG["gold"]["learned"]["base"]} if "learned" in CFG["gold"] else set()
    out = [("pretrain", f"{b}/pretrain/{m}.tsv") for m in sorted(used) if is_tiny(m)]
    out += [("sft", f"{b}/sft/{p}.tsv") for p in policies] if SFT else []
    out += [("gold_rm", f"{b}/gold_rm/{x}.tsv") for x in ("pairs", "comparisons", "rm")] if "learned" in CFG["gold"] else []
    out += [("pairs", f"{b}/pairs/{p}{rep}.tsv") for p, rep in comparison_files()]
    out += [("labels", f"{b}/labels/{p}{rep}/part{k}.tsv") for p, rep in comparison_files()
            for k in range(label_part_count(CFG, p))]
    out += [("pool", f) for p, rep in pool_files_of() for f in shard_benchmarks(f"{b}/pool/{p}{rep}")]
    out += [("score_gold", f) for p, rep in pool_files_of() for f in
            (shard_benchmarks(f"{b}/score_gold/{p}{rep}") if SHARD else
             [f"{b}/score_gold/{p}{rep}/part{k}.tsv" for k in range(CFG["bon"]["gold_parts"])])]
    if CFG["rm_train"]["base_loglik"]:
        out += [("loglik_pairs", f"{b}/loglik_pairs/{p}/{r}{rep}.tsv") for p, r, rep in replicate_files(cells, cmp_rep)]
        out += [("loglik_pool", f) for p, r, rep in replicate_files(scored_cells(), pool_rep)
                for f in shard_benchmarks(f"{b}/loglik_pool/{p}/{r}{rep}")]
    out += [("rm", f) for f in grid(f"{b}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.tsv")]
    out += [("scores", f) for d in scored_rm_dirs() for f in shard_benchmarks(d.replace(f"{OUT}/rm/", f"{b}/scores/"))]
    out += [("rl", r.replace(f"{OUT}/rl/", f"{b}/rl/").replace(".csv", ".tsv")) for r in rl_runs()]
    return out


def replicate_files(cells, rep_of):
    """(policy, rm, rep) of every per-replicate file the proxies of `cells` read."""
    return sorted({(p, r, rep_of(s)) for p, r, d in cells for s in CELL_SEEDS[(p, r, d)]})


def comparison_files():
    """(policy, rep) of every comparison sample the study draws."""
    return sorted({(p, rep) for p, _, rep in replicate_files(grid_cells(CFG), cmp_rep)})


def pool_files_of():
    """(policy, rep) of every pool the study samples: each scored proxy's and each PPO run's."""
    cells = scored_cells()
    pools = {(p, rep) for p, _, rep in replicate_files(cells, pool_rep)}
    if "rl" in CFG["methods"]:
        pools |= {(p, pool_rep(s)) for p, r, d, _ in rl_run_cells(CFG) for s in rl_seeds(CFG, CELL_SEEDS[(p, r, d)])}
    return sorted(pools)


def scored_cells():
    """The cells whose proxies score the pool: every cell for best-of-n, else the RL cells."""
    return grid_cells(CFG) if "bon" in CFG["methods"] else rl_cells(CFG)


def scored_rm_dirs():
    """The proxies that score the pool: all of them for best-of-n, else those PPO runs use."""
    return rm_dirs() if "bon" in CFG["methods"] else rl_rm_dirs()


def all_targets():
    # the labelled comparison sets: no job reads them whole (proxies read their parts)
    targets = [f"{OUT}/comparisons/{p}{rep}.parquet" for p, rep in comparison_files()]
    targets += [f"{OUT}/tables/rm_metrics.csv"]
    if "bon" in CFG["methods"]:
        targets += [f"{OUT}/fits/bon.csv", f"{OUT}/figures/fig01_bon.pdf"]
    if "rl" in CFG["methods"]:
        targets += [f"{OUT}/fits/rl.csv", f"{OUT}/figures/fig01_rl.pdf"]
    if len(CFG["reward_models"]) > 1:
        targets += [f"{OUT}/fits/scaling.csv"]
    if "bon" in CFG["methods"]:
        targets += [f"{OUT}/fits/extrapolation.csv", f"{OUT}/findings.txt", f"{OUT}/summary.md"]
    if len(CFG["reward_models"]) > 2:
        targets += [f"{OUT}/fits/forecast.csv"]
    return targets


# Resources
# Every job asks for memory (mem_mb, MB of host RAM) that grows with the parameters of the models
# it loads, and for wall time (runtime, minutes): a GPU job the estimate `overopt plan` prints
# (workflow/overopt/plan.py: its FLOPs at `cluster:` throughput x `cluster.safety`, at most
# `cluster.max_runtime_h`), a CPU job a base that grows with its models. Both double with each
# retry (`attempt`): a job that the scheduler kills for memory or time (OUT_OF_MEMORY, TIMEOUT) is
# resubmitted with twice as much, up to `retries` times (profiles/slurm sets 2). A GPU job also
# states its estimated GPU memory (gpu_mem_mb; `overopt plan` refuses a study where one exceeds
# `cluster.gpu_memory_gb`). `gpu` is 1 when a model is an `hf:` model, 0 in the tiny world. A site
# overrides any of these per rule with `--set-resources`.
COSTS = Costs(CFG)


def _cost(rule, wildcards):
    """(FLOPs, GPU bytes) of the job of `rule` with these wildcards (plan.Costs)."""
    w = {k: getattr(wildcards, k, None) for k in ("policy", "rm", "data", "shard", "part")}
    index = w["shard"] or w["part"]  # a pool's shard, or a comparison set's labelled part
    return COSTS.job(rule, policy=w["policy"], rm=w["rm"], data=int(w["data"]) if w["data"] else None,
                     shard=int(index) if index else None)


def gpu_mem(rule):
    """gpu_mem_mb: the job's estimated GPU memory, 0 on CPU."""
    return lambda wildcards: int(_cost(rule, wildcards)[1] / 1e6)

BYTES_PER_PARAM = 4  # fp32 weights, or bf16 weights with a copy's slack while loading
UNKNOWN_PARAMS = 1_000_000_000  # an hf hub id with no local config.json and no `params:`: assume 1B


def _gold_params():
    """The gold's parameters: its reference LM in the tiny world (none for an n-gram gold), the
    reward model itself for hf."""
    gold = CFG["gold"]
    if "learned" in gold:
        return model_params(MODELS[gold["learned"]["base"]])
    if "tiny" in gold:
        return model_params(MODELS[gold["tiny"]["reference"]]) if "reference" in gold["tiny"] else 0
    return model_params(gold)


def job_params(wildcards, roles):
    """Parameters a job holds: one model per role, a role being a wildcard naming a model
    (`policy`, `rm`, `model`) or `gold`. A role listed twice counts twice (PPO's reference)."""
    sizes = [_gold_params() if r == "gold" else model_params(MODELS[getattr(wildcards, r)]) for r in roles]
    return sum(UNKNOWN_PARAMS if n is None else n for n in sizes)


def mem(*roles, base):
    """mem_mb: `base` MB (Python, torch, data; what the tiny world needs) plus BYTES_PER_PARAM per
    parameter of the models in `roles`, doubled per attempt."""

    def mem_mb(wildcards, attempt):
        return int((base + BYTES_PER_PARAM * job_params(wildcards, roles) / 1e6) * 2 ** (attempt - 1))

    return mem_mb


def pool_mem(base):
    """mem_mb of a job holding a whole pool's texts in memory (the merge of its shards): `base`
    plus about twice its characters, doubled per attempt."""
    bon, world = CFG["bon"], CFG["world"]
    chars = bon["prompts"] * bon["samples"] * (world["prompt_chars"] + 8 * world["completion_tokens"])

    def mem_mb(wildcards, attempt):
        return int((base + 2 * chars / 1e6) * 2 ** (attempt - 1))

    return mem_mb


def runtime(*roles, base, rule=None):
    """runtime (minutes): a GPU job of `rule`, its cost model's request (`plan.requested_minutes`);
    otherwise `base` (ample for the tiny world) times 1 + billions of parameters in `roles`. Doubled
    per attempt."""

    def minutes(wildcards, attempt):
        if rule:
            flops, gpu_bytes = _cost(rule, wildcards)
            if gpu_bytes:
                return requested_minutes(CFG, flops, attempt)
        return int(base * (1 + job_params(wildcards, roles) / 1e9) * 2 ** (attempt - 1))

    return minutes


# Aggregation (tables, fits, figures) reads small CSVs: it runs in the Snakemake process itself
# (on the login node under a cluster executor) instead of waiting in the queue for seconds of work.
localrules:
    rm_table,
    bon_curve,
    fit_bon,
    fit_rl,
    fig_bon,
    fig_rl,
    scaling,
    forecast,
    figures,
    findings,
    summary,


def write_spec(spec: str, out: str, log: str) -> None:
    """The model_spec rule's job: an hf: model's spec file, from its canonical JSON param."""
    import json
    from pathlib import Path

    from overopt.util import write_json

    write_json(json.loads(spec), out)
    Path(log).write_text(f"{out}: {spec}\n")
