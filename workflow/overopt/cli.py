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

# Snakemake caps a job's BLAS/OpenMP threads (OMP_NUM_THREADS = the rule's threads) but not the
# tokenizers library's pool, which otherwise takes every core and slows the jobs beside it.
if "OMP_NUM_THREADS" in os.environ:
    os.environ.setdefault("RAYON_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

from .util import setup_logging  # noqa: E402


def _json(s: str):
    return json.loads(s)


def cmd_tokenizer(a):
    from .text import corpus_split, save_tokenizer

    train, held = corpus_split()
    save_tokenizer(train + held, a.out)


def cmd_pretrain(a):
    from .text import corpus_split
    from .models import pretrain

    train, held = corpus_split()
    pretrain(a.spec, train, held, a.tokenizer, a.out, a.steps, a.batch_size, a.seq_len, a.lr, a.seed, a.threads)


def cmd_gold(a):
    from .text import corpus_split
    from .gold import build_gold

    train, held = corpus_split()
    build_gold(a.spec, a.out, a.reference, held, a.prompt_chars, a.completion_tokens, a.seed, train_text=train)


def cmd_pairs(a):
    from .comparisons import sample_pairs

    sample_pairs(a.policy, a.out, a.train_pairs, a.val_pairs, a.prompt_chars, a.completion_tokens, a.batch_size, a.seed,
                 a.threads, a.prompt_file)


def cmd_comparisons(a):
    from .comparisons import label_pairs

    label_pairs(a.pairs, a.gold, a.out, a.label_noise, a.threads)


def cmd_train_rm(a):
    from .rm import train_rm

    train_rm(a.base, a.comparisons, a.out, a.data_size, a.seed, a.epochs, a.batch_size, a.lr, a.threads, a.base_loglik,
             a.readout_lr, a.readout_cap, a.loglik)


def cmd_rm_table(a):
    from .report import rm_table

    rm_table(a.metrics, a.out)


def cmd_pool(a):
    from .pool import make_pool

    make_pool(a.policy, a.out, a.prompts, a.samples, a.prompt_chars, a.completion_tokens, a.batch_size, a.seed, a.threads,
              a.prompt_file)


def cmd_score_gold(a):
    from .pool import score_gold

    score_gold(a.pool, a.gold, a.out, a.threads)


def cmd_score_proxy(a):
    from .pool import score_proxy

    score_proxy(a.pool, a.gold_scores, a.rm, a.out, a.threads, a.dtype, a.loglik)


def cmd_loglik_pairs(a):
    from .loglik import pairs_table

    pairs_table(a.base, a.comparisons, a.out, a.threads)


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

    from .plots import fig_curves, load_curves

    fig_curves(load_curves(a.curves), pd.read_csv(a.fits), "bon", a.out, "best-of-n")


def cmd_ppo(a):
    import pandas as pd

    from .pool import proxy_offset
    from .text import corpus_split, random_prompts
    import numpy as np

    from .ppo import PPOConfig, gold_score_fn, proxy_reward_fn, run_ppo

    if a.prompt_file:
        from .prompts import prompt_split

        train_prompts = prompt_split(a.prompt_file, "train")
    else:
        train, _ = corpus_split()
        train_prompts = random_prompts(train, 20000, a.prompt_chars, np.random.default_rng(a.seed + 1000))
    pool = pd.read_parquet(a.pool, columns=["prompt_id", "prompt"]).drop_duplicates("prompt_id").sort_values("prompt_id")
    cfg = PPOConfig(**json.loads(a.settings), kl_penalty=a.kl_penalty, seed=a.seed)
    run_ppo(a.policy, proxy_reward_fn(a.rm, proxy_offset(a.scores)), gold_score_fn(a.gold, a.pool_gold), a.out,
            a.checkpoint, train_prompts, pool["prompt"].tolist(), a.completion_tokens, cfg, a.threads,
            inputs=(a.rm, a.scores, a.gold, a.pool_gold), updates_out=a.updates)


def cmd_fit_rl(a):
    from .fit import fit_rl_table

    fit_rl_table(a.runs, a.metrics, a.out, a.min_d, a.bootstrap)


def cmd_fig_rl(a):
    import pandas as pd

    from .plots import fig_bon_vs_rl, fig_curves, fig_kl_penalty, fig_rl_kl, load_curves

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

    from .fit import extrapolation_error
    from .findings import main_policy, seed_mean_curves
    from .plots import (fig_data_size, fig_extrapolation, fig_max_gold, fig_policy_size, fig_rm_loss, load_curves,
                        with_params)
    from .util import atomic_file

    bon, bon_fits = load_curves(a.bon_curves), pd.read_csv(a.bon_fits)
    fig_data_size(bon, bon_fits, a.fig04)
    fig_rm_loss(bon, bon_fits, a.loss_n, a.fig05, a.fig06)
    pp = _policy_params(a.policy_params)
    fig_policy_size(bon.assign(policy_params=bon["policy"].map(pp)) if pp else bon, bon_fits, a.fig07, a.fig24)
    fig_max_gold(bon_fits, a.fig10)

    # Fig. 26: fit on the left part of each seed-mean curve of the main policy, read the error at the end
    curves = {"bon": with_params(bon, bon_fits)}
    max_d = {"bon": a.bon_max_d}
    if a.rl_runs:
        rl, rl_fits = load_curves(a.rl_runs), pd.read_csv(a.rl_fits)
        curves["rl"] = with_params(rl[rl["kl_penalty"] == 0], rl_fits)
        max_d["rl"] = a.rl_max_d
    pol = main_policy(bon_fits)
    rows = []
    for method, c in curves.items():
        c = c[c["policy"] == pol]
        top = c["data"].max()
        for key, m in seed_mean_curves(c[c["data"] == top], "n" if method == "bon" else "step").items():
            rows.append({"method": method, "policy": key[0], "rm_params": key[1], "data": key[2],
                         "rm": c[c["rm_params"] == key[1]]["rm"].iloc[0], "max_d": max_d[method],
                         **extrapolation_error(method, m["d"], m["gold"], max_d[method])})
    table = pd.DataFrame(rows)
    with atomic_file(a.extrapolation) as tmp:
        table.to_csv(tmp, index=False)
    fig_extrapolation(curves, max_d, table, a.fig26)


def cmd_forecast(a):
    import pandas as pd

    from .plots import fig_forecast, load_curves
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
    from .findings import check, policy_check
    from .util import atomic_file

    lines = [f.line() for f in check(a.results, a.loss_n) + policy_check(a.results, _policy_params(a.policy_params))]
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


def cmd_prompts(a):
    from .prompts import write_prompt_table

    write_prompt_table(a.path, a.column, a.heldout, a.seed, a.prompt_chars, a.out)


def cmd_model_spec(a):
    from .util import write_json

    write_json(a.spec, a.out)


def cmd_plan(a):
    import yaml

    from .config import validate
    from .plan import format_plan, plan

    print(format_plan(plan(validate(yaml.safe_load(Path(a.config).read_text())), a.mfu, a.peak_tflops)), end="")


def add_hf_parsers(sub):
    s = sub.add_parser("prompts", help="read a prompts file, cut and split it into train / held out")
    s.add_argument("--path", required=True)
    s.add_argument("--column", required=True)
    s.add_argument("--heldout", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_prompts)

    s = sub.add_parser("model-spec", help="write an hf: model spec file")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_model_spec)

    s = sub.add_parser("plan", help="job counts per rule and a GPU-hours estimate for a config")
    s.add_argument("--config", required=True)
    s.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed")
    s.add_argument("--peak-tflops", type=float, default=312.0, help="peak TFLOP/s per GPU (A100 bf16: 312)")
    s.set_defaults(fn=cmd_plan)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="overopt")
    sub = p.add_subparsers(dest="step", required=True)

    s = sub.add_parser("tokenizer", help="build the tiny world's character tokenizer")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_tokenizer)

    s = sub.add_parser("pretrain", help="pretrain a tiny LM base on the corpus")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--batch-size", type=int, required=True)
    s.add_argument("--seq-len", type=int, required=True)
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("gold", help="build the gold reward directory")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--reference", default=None)
    s.add_argument("--out", required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.set_defaults(fn=cmd_gold)

    s = sub.add_parser("pairs", help="sample two pi_init completions of each training prompt")
    s.add_argument("--policy", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--train-pairs", type=int, required=True)
    s.add_argument("--val-pairs", type=int, required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--prompt-file", default=None, help="prompts table from `overopt prompts` (default: corpus)")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pairs)

    s = sub.add_parser("comparisons", help="label the sampled pairs by the gold")
    s.add_argument("--pairs", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--label-noise", type=float, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_comparisons)

    s = sub.add_parser("train-rm", help="train one proxy reward model")
    s.add_argument("--base", required=True)
    s.add_argument("--comparisons", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--data-size", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--base-loglik", action="store_true", help="add the frozen base's log-likelihood readout")
    s.add_argument("--readout-lr", type=float, default=None, help="learning rate of the readout's weight (default: --lr)")
    s.add_argument("--readout-cap", action="store_true", help="cap the readout's log-likelihood at a learned tau")
    s.add_argument("--loglik", default=None, help="the base's pair log-likelihoods (`overopt loglik-pairs`)")
    s.set_defaults(fn=cmd_train_rm)

    for name, texts, what in (("loglik-pairs", "comparisons", "both completions of every comparison pair"),
                              ("loglik-pool", "pool", "every sample of a best-of-n pool")):
        s = sub.add_parser(name, help=f"log-likelihood under a frozen base of {what}")
        s.add_argument("--base", required=True)
        s.add_argument(f"--{texts}", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--threads", type=int, default=1)
        s.set_defaults(fn=cmd_loglik_pairs if texts == "comparisons" else cmd_loglik_pool)

    s = sub.add_parser("rm-table", help="collect every proxy's metrics.json into one table")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_rm_table)

    s = sub.add_parser("pool", help="sample the best-of-n pool from pi_init")
    s.add_argument("--policy", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--prompts", type=int, required=True)
    s.add_argument("--samples", type=int, required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=1024)
    s.add_argument("--prompt-file", default=None, help="prompts table from `overopt prompts` (default: corpus)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pool)

    s = sub.add_parser("score-gold", help="score the pool with the gold")
    s.add_argument("--pool", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_score_gold)

    s = sub.add_parser("score-proxy", help="score the pool with one proxy RM")
    s.add_argument("--pool", required=True)
    s.add_argument("--gold-scores", required=True)
    s.add_argument("--rm", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    s.add_argument("--loglik", default=None, help="the base's pool log-likelihoods (`overopt loglik-pool`)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_score_proxy)

    s = sub.add_parser("bon-curve", help="best-of-n gold and proxy against d, from one scores file")
    s.add_argument("--scores", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_bon_curve)

    s = sub.add_parser("fit-bon", help="fit d(alpha - beta d) to every best-of-n curve")
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--bootstrap", type=int, required=True)
    s.set_defaults(fn=cmd_fit_bon)

    s = sub.add_parser("fig-bon", help="Figure 1 (best-of-n)")
    s.add_argument("--curves", nargs="+", required=True)
    s.add_argument("--fits", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_fig_bon)

    s = sub.add_parser("ppo", help="optimise the policy against one proxy RM with PPO")
    for k in ("policy", "rm", "gold", "pool", "pool_gold", "scores", "out", "checkpoint"):
        s.add_argument(f"--{k.replace('_', '-')}", required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--settings", required=True, help="the validated config's PPO settings, as JSON (rl, less the run selectors)")
    s.add_argument("--kl-penalty", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--updates", default=None, help="also write the optimiser's diagnostics, one row per step, here")
    s.add_argument("--prompt-file", default=None, help="prompts table from `overopt prompts` (default: corpus)")
    s.set_defaults(fn=cmd_ppo)

    s = sub.add_parser("fit-rl", help="fit d(alpha - beta log d) to every PPO run")
    s.add_argument("--runs", nargs="+", required=True)
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--min-d", type=float, required=True)
    s.add_argument("--bootstrap", type=int, required=True)
    s.set_defaults(fn=cmd_fit_rl)

    s = sub.add_parser("fig-rl", help="Figures 1 (RL), 8, 9 and 14")
    s.add_argument("--runs", nargs="+", required=True)
    s.add_argument("--fits", required=True)
    s.add_argument("--bon-curves", nargs="*", default=[])
    s.add_argument("--bon-fits", default=None)
    for k in ("fig01", "fig08", "fig09", "fig14"):
        s.add_argument(f"--{k}", required=True)
    s.set_defaults(fn=cmd_fig_rl)

    s = sub.add_parser("scaling", help="coefficient lines in log RM size (Fig. 3)")
    s.add_argument("--bon", default=None)
    s.add_argument("--rl", default=None)
    s.add_argument("--out", required=True)
    s.add_argument("--figure", required=True)
    s.add_argument("--bootstrap", type=int, required=True)
    s.set_defaults(fn=cmd_scaling)

    s = sub.add_parser("predict", help="where to stop: the predicted peak for an RM size, from a finished study")
    s.add_argument("--results", default="results")
    s.add_argument("--rm-params", type=float, required=True)
    s.add_argument("--data", type=int, required=True)
    s.add_argument("--method", choices=["bon", "rl"], required=True)
    s.add_argument("--policy", default=None)
    s.add_argument("--extrapolate", action="store_true")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("figures", help="Figures 4, 5, 6, 7, 10, 24, 26 and the extrapolation table")
    s.add_argument("--bon-curves", nargs="+", required=True)
    s.add_argument("--bon-fits", required=True)
    s.add_argument("--rl-runs", nargs="*", default=[])
    s.add_argument("--rl-fits", default=None)
    s.add_argument("--policy-params", nargs="*", default=[], help="name=params for each policy")
    s.add_argument("--loss-n", type=int, default=64)
    s.add_argument("--bon-max-d", type=float, default=1.8)
    s.add_argument("--rl-max-d", type=float, default=2.0)
    s.add_argument("--extrapolation", required=True)
    for k in ("fig04", "fig05", "fig06", "fig07", "fig10", "fig24", "fig26"):
        s.add_argument(f"--{k}", required=True)
    s.set_defaults(fn=cmd_figures)

    s = sub.add_parser("forecast", help="predict the largest RM from the others' coefficient lines")
    s.add_argument("--bon-fits", default=None)
    s.add_argument("--bon-curves", nargs="*", default=[])
    s.add_argument("--rl-fits", default=None)
    s.add_argument("--rl-runs", nargs="*", default=[])
    s.add_argument("--bootstrap", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--figure", required=True)
    s.set_defaults(fn=cmd_forecast)

    s = sub.add_parser("findings", help="check the paper's findings on a finished study (exit 1 on a FAIL)")
    s.add_argument("--results", default="results")
    s.add_argument("--policy-params", nargs="*", default=[], help="name=params for each policy")
    s.add_argument("--out", default=None, help="also write the lines here")
    s.add_argument("--no-fail", action="store_true", help="exit 0 even when a finding fails")
    s.add_argument("--loss-n", type=int, default=64, help="the n at which gold is read against RM loss")
    s.set_defaults(fn=cmd_findings)

    s = sub.add_parser("summary", help="results/summary.md: findings, seed-mean tables, job time by rule")
    s.add_argument("--findings", required=True)
    s.add_argument("--rm-metrics", required=True)
    s.add_argument("--bon", default=None)
    s.add_argument("--rl", default=None)
    s.add_argument("--scaling", default=None)
    s.add_argument("--benchmarks", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_summary)

    add_hf_parsers(sub)
    a = p.parse_args(argv)
    setup_logging()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
