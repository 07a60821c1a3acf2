# Validated config, wildcard constraints and target helpers. The only place config is read.
from overopt.config import ConfigError, canonical, tiny_params, validate

try:
    CFG = validate(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

OUT = CFG["outdir"]
MODELS = CFG["models"]


wildcard_constraints:
    policy="[A-Za-z0-9][A-Za-z0-9_.-]*",
    rm="[A-Za-z0-9][A-Za-z0-9_.-]*",
    model="[A-Za-z0-9][A-Za-z0-9_.-]*",
    data=r"\d+",
    seed=r"\d+",
    kl=r"[0-9]+(\.[0-9]+)?(e-?[0-9]+)?",


def is_tiny(name):
    return "tiny" in MODELS[name]


def base_path(name):
    """The model directory a downstream job loads: built here (tiny) or given (hf)."""
    return f"{OUT}/base/{name}" if is_tiny(name) else MODELS[name]["hf"]


def base_input(name):
    """Snakemake input for a model: the pretraining target for tiny models, nothing for hf ids."""
    return [f"{OUT}/base/{name}"] if is_tiny(name) else []


def pretrain_threads(name):
    """Larger bases sit on the critical path (the gold's reference above all): give them 2 threads."""
    return 2 if tiny_params(MODELS[name]["tiny"]) > 500_000 else 1


def gpus(*names):
    """Jobs on real-scale models ask for one GPU; the tiny world runs on CPU."""
    return 0 if all(is_tiny(n) for n in names) else 1


def rm_dirs():
    return grid(f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}")


def grid(pattern):
    """`pattern` expanded over every policy x RM x data size x seed."""
    return expand(
        pattern, policy=CFG["policies"], rm=CFG["reward_models"], data=CFG["data_sizes"], seed=CFG["seeds"]
    )


def rl_runs():
    """Every PPO run: the RL sub-grid (rl.data_sizes, default all) x kl_penalties x seeds."""
    if "rl" not in CFG["methods"]:
        return []
    return expand(
        f"{OUT}/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.csv",
        policy=CFG["policies"],
        rm=CFG["reward_models"],
        data=CFG["rl"].get("data_sizes", CFG["data_sizes"]),
        kl=CFG["kl_penalties"],
        seed=CFG["seeds"],
    )


def rl_rm_dirs():
    """The proxies that PPO runs use (the RL sub-grid)."""
    return expand(
        f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}",
        policy=CFG["policies"],
        rm=CFG["reward_models"],
        data=CFG["rl"].get("data_sizes", CFG["data_sizes"]),
        seed=CFG["seeds"],
    )


RL_FLAGS = ["steps", "batch_size", "minibatch_size", "epochs", "lr", "eval_every", "eval_prompts",
            "eval_samples", "checkpoint_every"]


def rl_args(kl, seed):
    """PPO hyperparameters as CLI flags (a plain string: a stable Snakemake param)."""
    flags = [f"--{k.replace('_', '-')} {CFG['rl'][k]}" for k in RL_FLAGS if k in CFG["rl"]]
    return " ".join(flags + [f"--kl-penalty {kl}", f"--seed {seed}"])


def all_targets():
    targets = [f"{OUT}/tables/rm_metrics.csv"]
    if "bon" in CFG["methods"]:
        targets += [f"{OUT}/fits/bon.csv", f"{OUT}/figures/fig01_bon.pdf"]
    if "rl" in CFG["methods"]:
        targets += [f"{OUT}/fits/rl.csv", f"{OUT}/figures/fig01_rl.pdf"]
    if len(CFG["reward_models"]) > 1:
        targets += [f"{OUT}/fits/scaling.csv"]
    return targets
