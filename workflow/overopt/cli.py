"""`overopt <step> ...`: the one entry point every Snakemake rule calls.

Arguments arrive already validated from the workflow config (see workflow/rules/common.smk);
this module only parses them and hands them to the module that owns the science.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import schema_defaults
from .forkserver import run_in_server, serve
from .util import keep_freed_memory, setup_logging


def _json(s: str):
    return json.loads(s)


def _pair_range(s: str) -> tuple[int, int]:
    """LO:HI, the ids lo..hi-1."""
    lo, sep, hi = s.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or int(lo) >= int(hi):
        raise argparse.ArgumentTypeError(f"{s!r}: not a range LO:HI of pair ids with LO < HI")
    return int(lo), int(hi)


def cmd_tokenizer(a):
    from .text import corpus_split, save_tokenizer

    train, held = corpus_split()
    save_tokenizer(train + held, a.out)


def cmd_pretrain(a):
    from .text import corpus_split
    from .models import pretrain

    train, held = corpus_split()
    pretrain(a.spec, train, held, a.tokenizer, a.out, a.steps, a.batch_size, a.seq_len, a.lr, a.seed, a.threads)


def cmd_sft(a):
    from .sft import demonstrations, sft

    train, held = demonstrations(a.demonstrations, a.column)
    sft(a.base, a.out, a.spec_out, train, held, a.steps, a.batch_size, a.seq_len, a.lr, a.seed, a.threads)


def cmd_gold(a):
    from .text import corpus_split
    from .gold import build_gold

    train, held = corpus_split()
    build_gold(a.spec, a.out, a.reference, held, a.prompt_chars, a.completion_tokens, a.seed, train_text=train,
               learned_rm=a.learned_rm)


def cmd_pairs(a):
    from .comparisons import sample_pairs

    sample_pairs(a.policy, a.out, a.train_pairs, a.val_pairs, a.prompt_chars, a.completion_tokens, a.batch_size, a.seed,
                 a.threads, a.prompt_file)


def cmd_comparisons(a):
    from .comparisons import label_pairs

    label_pairs(a.pairs, a.gold, a.out, a.label_noise, a.threads, a.rows)


def cmd_merge_comparisons(a):
    from .comparisons import merge_parts

    merge_parts(a.parts, a.out)


def cmd_train_rm(a):
    from .rm import train_rm

    train_rm(a.base, a.comparisons, a.out, a.data_size, a.seed, a.epochs, a.batch_size, a.lr, a.threads, a.base_loglik,
             a.readout_lr, a.readout_cap, a.loglik, policy=a.cell[0], rm=a.cell[1])


def cmd_rm_table(a):
    from .report import rm_table

    rm_table(a.metrics, a.out)


def cmd_pool(a):
    from .pool import make_pool

    make_pool(a.policy, a.out, a.prompts, a.samples, a.prompt_chars, a.completion_tokens, a.batch_size, a.seed, a.threads,
              a.prompt_file, a.replicate, tuple(a.shard) if a.shard else None)


def cmd_score_gold(a):
    from .pool import score_gold

    score_gold(a.pool, a.gold, a.out, a.threads, a.raw, a.prompt_range)


def cmd_score_proxy(a):
    from .pool import score_proxy

    score_proxy(a.pool, a.gold_scores, a.rm, a.out, a.threads, a.dtype, a.loglik)


def cmd_merge_shards(a):
    from . import pool

    if a.kind == "scores":
        if a.gold_scores is None:
            raise SystemExit("merge-shards --kind scores needs --gold-scores")
        pool.merge_scores(a.shards, a.gold_scores, a.out)
    else:
        {"pool": pool.merge_pool, "gold": pool.merge_gold}[a.kind](a.shards, a.out)


def cmd_loglik_pairs(a):
    from .loglik import pairs_table

    pairs_table(a.base, a.comparisons, a.out, a.threads, a.train_pairs)


def cmd_loglik_pool(a):
    from .loglik import pool_table

    pool_table(a.base, a.pool, a.out, a.threads)


def cmd_bon_curve(a):
    from .estimator import write_curve

    write_curve(a.scores, a.out)


def cmd_fit_bon(a):
    from .fit import fit_bon_table

    fit_bon_table(a.scores, a.metrics, a.out, a.bootstrap)


def cmd_fig_bon(a):
    import pandas as pd

    from .keys import load_curves
    from .plots import fig_curves

    fig_curves(load_curves(a.curves), pd.read_csv(a.fits), "bon", a.out, "best-of-n")


def cmd_ppo(a):
    import pandas as pd

    from .keys import read_proxy_metrics
    from .pool import proxy_offset
    from .ppo import PPOConfig, gold_score_fn, proxy_reward_fn, run_ppo
    from .prompts import ppo_prompts

    keys = {**read_proxy_metrics(a.rm)["keys"], "kl_penalty": a.kl_penalty, "seed": a.seed}
    import pyarrow.parquet as pq

    # the prompts and the pool's replicate, not its completions
    cols = [c for c in ("prompt_id", "prompt", "replicate") if c in pq.read_schema(a.pool).names]
    pool = pd.read_parquet(a.pool, columns=cols).drop_duplicates("prompt_id").sort_values("prompt_id")
    cfg = PPOConfig(**json.loads(a.settings), kl_penalty=a.kl_penalty, seed=a.seed)
    run_ppo(a.policy, proxy_reward_fn(a.rm, proxy_offset(a.scores)), gold_score_fn(a.gold, a.pool_gold), a.out,
            a.checkpoint, ppo_prompts(a.prompt_file, a.prompt_chars, a.seed), pool["prompt"].tolist(),
            a.completion_tokens, cfg, a.threads, inputs=(a.rm, a.scores, a.gold, a.pool_gold), updates_out=a.updates,
            by_prompt_out=a.by_prompt,
            keys={**{k: keys[k] for k in ("policy", "rm", "data", "kl_penalty", "seed")},
                  "pool": int(pool["replicate"].iloc[0]) if "replicate" in pool else 0})


def cmd_fit_rl(a):
    from .fit import fit_rl_table

    fit_rl_table(a.runs, a.metrics, a.out, a.min_d, a.bootstrap)


def cmd_fig_rl(a):
    import pandas as pd

    from .keys import load_curves
    from .plots import fig_bon_vs_rl, fig_curves, fig_kl_penalty, fig_rl_kl

    rl, rl_fits = load_curves(a.runs), pd.read_csv(a.fits)
    fig_curves(rl, rl_fits, "rl", a.fig01, "RL")
    fig_rl_kl(rl, rl_fits, a.fig14)
    fig_kl_penalty(rl, rl_fits, a.fig09)
    if a.bon_curves:
        fig_bon_vs_rl(load_curves(a.bon_curves), rl, pd.read_csv(a.bon_fits), rl_fits, a.fig08)


def cmd_scaling(a):
    import pandas as pd

    from .plots import fig_scaling
    from .scaling import scaling_table
    from .util import atomic_file

    fits = {m: pd.read_csv(f) for m, f in (("bon", a.bon), ("rl", a.rl)) if f}
    table = pd.concat([scaling_table(f, m, a.bootstrap) for m, f in fits.items()], ignore_index=True)
    with atomic_file(a.out) as tmp:
        table.to_csv(tmp, index=False)
    fig_scaling(fits, table, a.figure)


def cmd_predict(a):
    import pandas as pd

    from .scaling import predict_peak

    fits = pd.read_csv(f"{a.results}/fits/{a.method}.csv")
    r = predict_peak(fits, a.method, a.rm_params, a.data, a.policy)
    lo, hi = r["params_range"]
    if r["extrapolated"]:
        msg = f"{a.rm_params:g} params is outside the fitted range {lo:,}..{hi:,}"
        if not a.extrapolate:
            print(f"refusing to extrapolate: {msg} (pass --extrapolate to predict anyway)", file=sys.stderr)
            return 2
        print(f"WARNING: extrapolating: {msg}; intervals assume the log-linear law holds there")
    ci = lambda k: f"{r[k]:.3g} [{r[k + '_lo']:.3g}, {r[k + '_hi']:.3g}]"
    print(f"method {a.method}, policy {r['policy']}, RM {a.rm_params:g} params, {a.data} comparisons "
          f"(fitted on {lo:,}..{hi:,} params)")
    print(f"alpha {ci('alpha')}, beta {ci('beta')}")
    print(f"peak d = sqrt(KL): {ci('d_peak')}")
    print(f"peak KL (nats):    {ci('kl_peak')}")
    if a.method == "bon":
        print(f"best-of-n at peak: n = {ci('n_peak')}")
    print(f"gold at the peak:  {ci('gold_peak')} (gold std. units above pi_init)")
    return 0


def _policy_params(items):
    """`name=params` pairs from the command line."""
    return {k: int(float(v)) for k, v in (x.split("=", 1) for x in items or [])}


def cmd_figures(a):
    """Figures 4, 5, 6, 7, 10, 24 and 26 (plus the extrapolation table) from curves and fits."""
    import pandas as pd

    from .keys import load_curves
    from .plots import fig_data_size, fig_extrapolation, fig_max_gold, fig_policy_size, fig_rm_loss
    from .scaling import extrapolation_table
    from .util import atomic_file

    bon, bon_fits = load_curves(a.bon_curves), pd.read_csv(a.bon_fits)
    fig_data_size(bon, bon_fits, a.fig04)
    fig_rm_loss(bon, bon_fits, a.loss_n, a.fig05, a.fig06)
    pp = _policy_params(a.policy_params)
    fig_policy_size(bon.assign(policy_params=bon["policy"].map(pp)) if pp else bon, bon_fits, a.fig07, a.fig24)
    fig_max_gold(bon_fits, a.fig10)
    rl = (load_curves(a.rl_runs), pd.read_csv(a.rl_fits)) if a.rl_runs else None
    curves, max_d, table = extrapolation_table((bon, bon_fits), rl, a.bon_max_d, a.rl_max_d)
    with atomic_file(a.extrapolation) as tmp:
        table.to_csv(tmp, index=False)
    fig_extrapolation(curves, max_d, table, a.fig26)


def cmd_forecast(a):
    import pandas as pd

    from .keys import load_curves
    from .plots import fig_forecast
    from .scaling import forecast_table
    from .util import atomic_file

    fits, curves = {}, {}
    for m, f, c in (("bon", a.bon_fits, a.bon_curves), ("rl", a.rl_fits, a.rl_runs)):
        if f:
            fits[m], curves[m] = pd.read_csv(f), load_curves(c)
    table = pd.concat([forecast_table(f, m, a.bootstrap) for m, f in fits.items()], ignore_index=True)
    with atomic_file(a.out) as tmp:
        table.to_csv(tmp, index=False)
    fig_forecast(table, curves, fits, a.figure)


def cmd_findings(a):
    from .findings import check, load
    from .util import atomic_file

    data = load(a.bon_fits, a.scores, a.rl_fits, a.rl_runs, a.rl_by_prompt)
    lines = [f.line() for f in check(data, a.loss_n, _policy_params(a.policy_params), a.bootstrap, workers=a.threads)]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        with atomic_file(a.out) as tmp:
            Path(tmp).write_text(text)
    failed = sum(l.startswith("FAIL") for l in lines)
    return 1 if failed and not a.no_fail else 0


def cmd_summary(a):
    from .summary import write_summary

    write_summary(a.out, a.findings, a.rm_metrics, a.bon, a.rl, a.scaling, a.benchmarks)


def cmd_robustness(a):
    from .robustness import write_robustness

    write_robustness(dict(x.split("=", 1) for x in a.study), a.out)


def cmd_prompts(a):
    from .prompts import write_prompt_table

    write_prompt_table(a.path, a.column, a.heldout, a.seed, a.prompt_chars, a.out)


def cmd_fork_server(a):
    serve(a.socket, a.parent, lambda argv: main(argv, fork=False))


def cmd_plan(a):
    import yaml

    from .config import validate
    from .plan import format_plan, plan

    cfg = validate(yaml.safe_load(Path(a.config).read_text()))
    # the command line overrides the config's cluster: settings for one estimate
    cfg["cluster"].update({k: v for k, v in (("mfu", a.mfu), ("peak_tflops", a.peak_tflops)) if v is not None})
    p = plan(cfg)
    print(format_plan(p), end="")
    return 1 if p["refused"] else 0


# ---------------------------------------------------------------------------- the command table

# Every option, defined once: its argparse settings. A command lists the options it takes; a
# (name, {...}) entry gives that command its own settings for the option.
_ANALYSIS = schema_defaults("analysis")
_req = {"required": True}
_int = {"type": int, "required": True}
_float = {"type": float, "required": True}
_files = {"nargs": "+", "required": True}
_opt_files = {"nargs": "*", "default": []}
OPTIONS = {
    "out": _req, "spec": {"type": _json, "required": True}, "tokenizer": _req, "policy": _req, "rm": _req,
    "base": _req, "gold": _req, "pool": _req, "comparisons": _req, "pairs": _req, "scores": _req,
    "steps": _int, "batch-size": _int, "seq-len": _int, "lr": _float, "seed": _int, "epochs": _int,
    "threads": {"type": int, "default": 1, "help": "torch threads (a Snakemake rule passes its own)"},
    "prompt-chars": _int, "completion-tokens": _int, "prompts": _int, "samples": _int,
    "prompt-file": {"default": None, "help": "prompts table from `overopt prompts` (default: the tiny world's corpus)"},
    "train-pairs": _int, "val-pairs": _int, "label-noise": _float, "data-size": _int,
    "cell": {"nargs": 2, "metavar": ("POLICY", "RM"), "required": True,
             "help": "the proxy's grid cell: the policy's and the RM's names (its keys, with --data-size and --seed)"},
    "readout-lr": {"type": float, "default": None, "help": "learning rate of the readout's weight (default: --lr)"},
    "base-loglik": {"action": "store_true", "help": "add the frozen base's log-likelihood readout"},
    "readout-cap": {"action": "store_true", "help": "cap the readout's log-likelihood at a learned tau"},
    "loglik": {"default": None, "help": "the base's log-likelihood table (`overopt loglik-pairs` / `loglik-pool`)"},
    "metrics": _files, "fits": _req, "curves": _files, "runs": _files, "bootstrap": _int, "min-d": _float,
    "dtype": {"choices": ["auto", "float32", "bfloat16"], "default": "auto"},
    "reference": {"default": None}, "pool-gold": _req,
    "gold-scores": {"default": None, "help": "the pool's gold scores (score-proxy leaves them out for a shard:"
                                             " merge-shards centres the raw scores and joins them)"}, "checkpoint": _req,
    "settings": {"required": True, "help": "the validated config's PPO settings, as JSON (rl, less the run selectors)"},
    "kl-penalty": _float,
    "updates": {"default": None, "help": "also write the optimiser's diagnostics, one row per step, here"},
    "by-prompt": {"default": None, "help": "also write each evaluation's gold and proxy per evaluation prompt here"},
    "bon-fits": {"default": None}, "rl-fits": {"default": None}, "bon-curves": _opt_files, "rl-runs": _opt_files,
    "scaling": {"default": None, "help": "the coefficient table of `overopt scaling`"},
    "policy-params": {"nargs": "*", "default": [], "help": "name=params for each policy"},
    # defaults of the options a user may leave out: the config schema's (analysis), defined there once
    "loss-n": {"type": int, "default": _ANALYSIS["loss_n"], "help": "the n at which gold is read against RM loss"},
    "bon-max-d": {"type": float, "default": _ANALYSIS["extrapolate_bon_max_d"]},
    "rl-max-d": {"type": float, "default": _ANALYSIS["extrapolate_rl_max_d"]},
    "extrapolation": _req, "figure": _req, "findings": _req, "rm-metrics": _req,
    "bon": {"default": None}, "rl": {"default": None},
    "benchmarks": {"nargs": "*", "default": [], "help": "group=file of every job's `benchmark:` file"},
    "results": {"default": "results"}, "rm-params": _float, "data": _int,
    "method": {"choices": ["bon", "rl"], "required": True}, "extrapolate": {"action": "store_true"},
    "path": _req, "column": _req, "heldout": _int, "config": _req,
    "mfu": {"type": float, "default": None, "help": "model FLOP utilisation assumed (default: the config's cluster.mfu)"},
    "peak-tflops": {"type": float, "default": None, "help": "peak TFLOP/s per GPU (default: the config's cluster.peak_tflops)"},
    **{f"fig{n:02d}": _req for n in (1, 4, 5, 6, 7, 8, 9, 10, 14, 24, 26)},
}

# name: (function, help, options)
COMMANDS = {
    "tokenizer": (cmd_tokenizer, "build the tiny world's character tokenizer", ["out"]),
    "pretrain": (cmd_pretrain, "pretrain a tiny LM base on the corpus",
                 ["spec", "tokenizer", "out", "steps", "batch-size", "seq-len", "lr", "seed", "threads"]),
    "sft": (cmd_sft, "fine-tune a policy's base on demonstrations before it becomes pi_init",
            ["base", "out", ("spec-out", {"required": True, "help": "the fine-tuned model's spec file"}),
             "steps", "batch-size", "seq-len", "lr", "seed", "threads",
             ("demonstrations", {"default": None, "help": "a .jsonl or .parquet of texts (default: the tiny world's corpus)"}),
             ("column", {"default": "text", "help": "the demonstrations' text column"})]),
    "gold": (cmd_gold, "build the gold reward directory",
             ["spec", "reference", "out", "prompt-chars", "completion-tokens", "seed",
              ("learned-rm", {"default": None, "help": "gold.learned: the trained reward model that is the gold"})]),
    "pairs": (cmd_pairs, "sample two pi_init completions of each training prompt",
              ["policy", "out", "train-pairs", "val-pairs", "prompt-chars", "completion-tokens", "prompt-file",
               "batch-size", "seed", "threads"]),
    "comparisons": (cmd_comparisons, "label the sampled pairs by the gold",
                    ["pairs", "gold", "out", "label-noise", "threads",
                     ("rows", {"type": _pair_range, "nargs": "+", "default": None, "metavar": "LO:HI",
                               "help": "only the pairs of these pair-id ranges: a part, joined by merge-comparisons"})]),
    "merge-comparisons": (cmd_merge_comparisons, "join the labelled parts of a comparison set",
                          [("parts", _files), "out"]),
    "train-rm": (cmd_train_rm, "train one proxy reward model",
                 ["base", ("comparisons", {"nargs": "+", "required": True,
                                           "help": "the labelled set, or its parts up to the data size"}),
                  "out", "cell", "data-size", "seed", "epochs", "batch-size",
                  "lr", "threads", "base-loglik", "readout-lr", "readout-cap", "loglik"]),
    "loglik-pairs": (cmd_loglik_pairs, "log-likelihood under a frozen base of both completions of the comparison pairs",
                     ["base", "comparisons", "out", "threads",
                      ("train-pairs", {"type": int, "default": None,
                                       "help": "only the first N training pairs (and every validation pair)"})]),
    "loglik-pool": (cmd_loglik_pool, "log-likelihood under a frozen base of every sample of a best-of-n pool",
                    ["base", "pool", "out", "threads"]),
    "rm-table": (cmd_rm_table, "collect every proxy's metrics.json into one table", ["metrics", "out"]),
    "pool": (cmd_pool, "sample the best-of-n pool from pi_init",
             ["policy", "out", "prompts", "samples", "prompt-chars", "completion-tokens",
              "batch-size", "prompt-file", "seed",
              ("replicate", {"type": int, "default": 0, "help": "replicate r: seed + r, and the r-th block of file prompts"}),
              ("shard", {"type": int, "nargs": 2, "metavar": ("LO", "HI"), "default": None,
                         "help": "only prompts LO..HI-1, each from its own seed (bon.shard_prompts)"}),
              "threads"]),
    "score-gold": (cmd_score_gold, "score the pool with the gold",
                   ["pool", "gold", "out", "threads",
                    ("raw", {"action": "store_true", "help": "a shard: raw scores, standardised by merge-shards"}),
                    ("prompt-range", {"type": int, "nargs": 2, "metavar": ("LO", "HI"), "default": None,
                                      "help": "only the samples of prompts LO..HI-1 (with --raw: a part of the pool)"})]),
    "score-proxy": (cmd_score_proxy, "score the pool with one proxy RM",
                    ["pool", "gold-scores", "rm", "out", "dtype", "loglik", "threads"]),
    "merge-shards": (cmd_merge_shards, "merge a pool's shards, or their gold, proxy or log-likelihood scores",
                     [("kind", {"choices": ["pool", "gold", "scores"], "required": True}),
                      ("shards", _files), "out", "gold-scores"]),
    "bon-curve": (cmd_bon_curve, "best-of-n gold and proxy against d, from one scores file", [("scores", _req), "out"]),
    "fit-bon": (cmd_fit_bon, "fit d(alpha - beta d) to every best-of-n curve", [("scores", _files), "metrics", "out", "bootstrap"]),
    "fig-bon": (cmd_fig_bon, "Figure 1 (best-of-n)", ["curves", "fits", "out"]),
    "ppo": (cmd_ppo, "optimise the policy against one proxy RM with PPO",
            ["policy", "rm", "gold", "pool", "pool-gold", "scores", "out", "checkpoint", "prompt-chars",
             "completion-tokens", "settings", "kl-penalty", "seed", "threads", "updates", "by-prompt", "prompt-file"]),
    "fit-rl": (cmd_fit_rl, "fit d(alpha - beta log d) to every PPO run", ["runs", "metrics", "out", "min-d", "bootstrap"]),
    "fig-rl": (cmd_fig_rl, "Figures 1 (RL), 8, 9 and 14",
               ["runs", "fits", "bon-curves", "bon-fits", "fig01", "fig08", "fig09", "fig14"]),
    "scaling": (cmd_scaling, "coefficient lines in log RM size (Fig. 3)", ["bon", "rl", "out", "figure", "bootstrap"]),
    "predict": (cmd_predict, "where to stop: the predicted peak for an RM size, from a finished study",
                ["results", "rm-params", "data", "method", ("policy", {"default": None}), "extrapolate"]),
    "figures": (cmd_figures, "Figures 4, 5, 6, 7, 10, 24, 26 and the extrapolation table",
                [("bon-curves", _files), ("bon-fits", _req), "rl-runs", "rl-fits", "policy-params", "loss-n",
                 "bon-max-d", "rl-max-d", "extrapolation", "fig04", "fig05", "fig06", "fig07", "fig10", "fig24", "fig26"]),
    "forecast": (cmd_forecast, "predict the largest RM from the others' coefficient lines",
                 ["bon-fits", "bon-curves", "rl-fits", "rl-runs", "bootstrap", "out", "figure"]),
    "findings": (cmd_findings, "check the paper's findings on a finished study (exit 1 on a FAIL)",
                 ["bon-fits", ("scores", {**_opt_files, "help": "best-of-n scores files (per-prompt curves)"}),
                  "rl-fits", "rl-runs",
                  ("rl-by-prompt", {**_opt_files, "help": "PPO's per-prompt evaluations (`overopt ppo --by-prompt`)"}),
                  ("bootstrap", {"type": int, "default": _ANALYSIS["findings_bootstrap"],
                                 "help": "cluster-bootstrap resamples (docs/findings.md)"}),
                  "policy-params", "loss-n", ("out", {"default": None, "help": "also write the lines here"}),
                  ("no-fail", {"action": "store_true", "help": "exit 0 even when a finding fails"}), "threads"]),
    "summary": (cmd_summary, "results/summary.md: findings, seed-mean tables, job time by rule",
                ["findings", "rm-metrics", "bon", "rl", "scaling", "benchmarks", "out"]),
    "robustness": (cmd_robustness, "which findings hold in which study: a table from their findings.txt",
                   [("study", {"nargs": "+", "required": True, "help": "name=path/to/findings.txt, in column order"}),
                    "out"]),
    "prompts": (cmd_prompts, "read a prompts file, cut and split it into train / held out",
                ["path", "column", "heldout", "seed", "prompt-chars", "out"]),
    "fork-server": (cmd_fork_server, "run jobs forked from one process that imported torch once (the Snakefile starts it)",
                    [("socket", _req), ("parent", {"type": int, "required": True, "help": "stop when this process is gone"})]),
    "plan": (cmd_plan, "jobs, GPU-hours, runtime and GPU memory per rule and the critical path of a config (exit 1: a job cannot fit)", ["config", "mfu", "peak-tflops"]),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="overopt")
    sub = p.add_subparsers(dest="step", required=True)
    for name, (fn, help_, options) in COMMANDS.items():
        s = sub.add_parser(name, help=help_)
        for opt in options:
            opt, settings = opt if isinstance(opt, tuple) else (opt, OPTIONS[opt])
            s.add_argument(f"--{opt}", **settings)
        s.set_defaults(fn=fn)
    return p


def main(argv=None, fork=True):
    """`fork`: run in this run's fork server where one takes the job (`forkserver`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Snakemake caps a job's BLAS/OpenMP threads (OMP_NUM_THREADS = the rule's threads) but not the
    # tokenizers library's pool, which otherwise takes every core and slows the jobs beside it.
    if "OMP_NUM_THREADS" in os.environ:
        os.environ.setdefault("RAYON_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    if fork and (code := run_in_server(argv)) is not None:
        return code
    a = parser().parse_args(argv)
    setup_logging()
    keep_freed_memory()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
