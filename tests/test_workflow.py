"""The smoke DAG end to end through Snakemake, and incremental reruns via its Python API."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

from conftest import ROOT, write_config


# aggregation targets that read every proxy
FIGS = ["fig01_bon", "fig01_rl", "fig03_scaling", "fig04_data_size", "fig05_rm_loss_gold", "fig06_rm_loss",
        "fig07_policy_size", "fig08_bon_vs_rl", "fig09_kl_penalty", "fig10_max_gold", "fig12_forecast", "fig14_rl_kl",
        "fig24_policy_gap", "fig26_extrapolation"]
TABLES = {"results/tables/rm_metrics.csv", "results/findings.txt", "results/summary.md"} | {
    f"results/fits/{t}.csv" for t in ("bon", "rl", "scaling", "forecast", "extrapolation")}
DOWNSTREAM = TABLES | {f"results/figures/{f}.{ext}" for f in FIGS for ext in ("pdf", "png")}
RMS = ("r1", "r2", "r3")


def per_proxy(rm, data, rl=True, policy="p"):
    """Every target of one proxy: itself, its pool scores and curve, and its PPO runs."""
    out = {f"results/rm/{policy}/{rm}/n{data}/s0", f"results/scores/{policy}/{rm}/n{data}/s0.parquet",
           f"results/bon/{policy}/{rm}/n{data}/s0.csv"}
    if rl:
        out |= {f"results/rl/{policy}/{rm}/n{data}/kl{k}/s0{ext}" for k in (0.0, 0.5) for ext in (".csv", ".updates.csv", ".by_prompt.csv")}
    return out


def dry_run(workdir: Path) -> set[str]:
    """Files Snakemake would (re)create, from a dry run of the full workflow."""
    updated: list[str] = []
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(),
            snakefile=ROOT / "Snakefile",
            workdir=workdir,
        )
        wf.dag().execute_workflow(executor="dryrun", updated_files=updated)
    return set(updated)


def test_smoke_run_writes_every_proxy(smoke_run, smoke_config):
    table = pd.read_csv(smoke_run / "results" / "tables" / "rm_metrics.csv")
    # the union of the sub-grids: p x 3 RMs x 2 data sizes, and p2 x 2 RMs x 1 data size
    assert len(table) == 3 * 2 + 2 * 1
    assert set(table[table["policy"] == "p2"]["train_pairs"]) == {128}
    for p in (smoke_run / "results" / "rm").glob("*/*/n*/s*"):
        m = json.loads((p / "metrics.json").read_text())
        assert {"params", "val_loss", "val_acc", "train_pairs"} <= set(m)
        row = table[(table["policy"] == p.parents[2].name) & (table["rm"] == p.parents[1].name)
                    & (table["data"] == int(p.parent.name[1:])) & (table["seed"] == int(p.name[1:]))]
        assert row["base_loglik_weight"].item() == pytest.approx(m["base_loglik_weight"])  # the smoke proxies have the readout
        assert row["base_loglik_cap"].item() == pytest.approx(m["base_loglik_cap"])  # ... with a learned cap
        assert (p / "model.safetensors").exists()
        assert m["train_pairs"] == int(p.parent.name[1:])
    cmp = pd.read_parquet(smoke_run / "results" / "comparisons" / "p.parquet")
    both = pd.concat([cmp["gold_a"], cmp["gold_b"]])
    assert abs(both.mean()) < 1e-6 and abs(both.std(ddof=0) - 1) < 1e-6  # standardised on pi_init samples
    assert not list((smoke_run / "results").rglob(".*tmp-*"))  # no half-written leftovers


def test_smoke_jobs_fork_from_one_server_that_ends_with_the_run(smoke_run):
    """A local run's one-thread jobs fork from its fork server (workflow/overopt/forkserver.py);
    jobs that start before it listens, or take more threads, run on their own."""
    logs = [f.read_text(errors="replace") for f in (smoke_run / "results" / "logs").rglob("*.log")]
    forked = [t for t in logs if "forked from the fork server" in t]
    torch_jobs = [t for t in logs if "overopt:" in t or "INFO" in t]
    assert len(forked) >= 0.8 * len(torch_jobs) and len(forked) > 20, (len(forked), len(torch_jobs))
    server_log = smoke_run / ".snakemake" / "log" / "overopt-fork-server.log"
    assert server_log.exists() and "Traceback" not in server_log.read_text()
    pids = [int(line.split()[-1]) for t in forked for line in t.splitlines() if "forked from the fork server" in line]
    assert len(set(pids)) == len(pids)  # a process per job


def test_smoke_run_writes_bon_scores_curves_fits_and_figure(smoke_run, smoke_config):
    res = smoke_run / "results"
    n_prompts, n_samples = smoke_config["bon"]["prompts"], smoke_config["bon"]["samples"]
    for rm in smoke_config["reward_models"]:
        s = pd.read_parquet(res / "scores" / "p" / rm / "n64" / "s0.parquet")
        assert list(s.columns) == ["prompt_id", "sample_id", "proxy", "gold"]
        assert len(s) == n_prompts * n_samples
        assert abs(s["proxy"].mean()) < 1e-6 and abs(s["gold"].mean()) < 1e-6  # re-centred on pi_init
        c = pd.read_csv(res / "bon" / "p" / rm / "n64" / "s0.csv")
        assert list(c.columns) == ["policy", "rm", "data", "seed", "n", "kl", "d", "gold", "gold_se", "proxy", "proxy_se"]
        assert c[["policy", "rm", "data", "seed"]].drop_duplicates().values.tolist() == [["p", rm, 64, 0]]
        assert c["n"].iloc[0] == 1 and c["n"].iloc[-1] == n_samples
    fits = pd.read_csv(res / "fits" / "bon.csv")
    assert len(fits) == 8
    for col in ["policy", "rm", "rm_params", "data", "seed", "alpha", "beta", "r2", "d_peak", "gold_peak",
                "alpha_lo", "alpha_hi", "beta_lo", "beta_hi"]:
        assert col in fits.columns
    assert (fits["alpha_lo"] <= fits["alpha_hi"]).all()
    for f in FIGS:
        for ext in ("pdf", "png"):
            assert (res / "figures" / f"{f}.{ext}").stat().st_size > 10_000
    sc = pd.read_csv(res / "fits" / "scaling.csv")
    assert set(sc[sc["method"] == "bon"]["coefficient"]) == {"alpha", "beta"}
    rl = pd.read_csv(res / "fits" / "rl.csv").dropna(subset=["alpha"])
    has_rl_line = rl.groupby("kl_penalty")["rm_params"].nunique().ge(2).any() if len(rl) else False
    assert ("rl" in set(sc["method"])) == bool(has_rl_line)


def test_changing_a_kl_penalty_reruns_only_rl(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["kl_penalties"] = [0.0, 0.25]
    write_config(smoke_copy, cfg)
    got = dry_run(smoke_copy)
    # everything that reads RL results, nothing that reads only best-of-n
    assert got == {f"results/rl/p/{r}/n128/kl0.25/s0{ext}" for r in RMS for ext in (".csv", ".updates.csv", ".by_prompt.csv")} | DOWNSTREAM - {
        "results/tables/rm_metrics.csv", "results/fits/bon.csv", "results/figures/fig01_bon.pdf",
        "results/figures/fig01_bon.png"}


def test_smoke_run_writes_rl_runs_fits_and_figures(smoke_run):
    res = smoke_run / "results"
    for r in RMS:
        for k in (0.0, 0.5):
            c = pd.read_csv(res / "rl" / "p" / r / "n128" / f"kl{k}" / "s0.csv")
            assert list(c.columns) == ["policy", "rm", "data", "kl_penalty", "seed", "pool", "step", "kl", "d", "gold",
                                       "gold_se", "proxy", "proxy_se"]
            keys = c[["policy", "rm", "data", "kl_penalty", "seed", "pool"]].drop_duplicates().values.tolist()
            assert keys == [["p", r, 128, k, 0, 0]]
            assert list(c["step"]) == [0, 2, 4]
            assert abs(c["kl"].iloc[0]) < 1e-5  # at step 0 the policy is pi_init
    fits = pd.read_csv(res / "fits" / "rl.csv")
    assert len(fits) == 6 and "kl_penalty" in fits.columns
    assert not (res / "rl" / "p2").exists()  # rl.policies: [p]
    assert not list(res.glob("rl_checkpoints/**/meta.json"))


def test_findings_and_figures_read_the_run_each_names(smoke_run):
    """kl_penalties [0.0, 0.5]: the unpenalised runs live under kl0.0. Each fit row, the curves the
    figures read and the findings' KL-penalty line come from the run of that penalty (keys in the
    files), not from a path rebuilt with another spelling of 0."""
    from overopt.keys import load_curves

    res = smoke_run / "results"
    runs = {(r, k): pd.read_csv(res / "rl" / "p" / r / "n128" / f"kl{k}" / "s0.csv") for r in RMS for k in (0.0, 0.5)}
    assert not runs["r1", 0.0]["gold"].equals(runs["r1", 0.5]["gold"])  # else the test could not tell them apart
    fits = pd.read_csv(res / "fits" / "rl.csv")
    for (r, k), c in runs.items():
        row = fits[(fits["rm"] == r) & (fits["kl_penalty"] == k)]
        assert len(row) == 1 and row["gold_max"].item() == pytest.approx(c["gold"].max())
        assert row["d_end"].item() == pytest.approx(c["d"].iloc[-1])
    read = load_curves(sorted(map(str, res.glob("rl/p/*/n128/kl*/s0.csv"))))  # the figures' reader
    for (r, k), c in runs.items():
        got = read[(read["rm"] == r) & (read["kl_penalty"] == k)]
        assert got["gold"].tolist() == pytest.approx(c["gold"].tolist())
    line = next(l for l in (res / "findings.txt").read_text().splitlines() if "KL penalty is no better" in l)
    params = dict(zip(fits["rm"], fits["rm_params"]))
    for r in RMS:  # the gap as the finding prints it, from the runs of each penalty (one seed: the mean is the run)
        pen, base = runs[r, 0.5], runs[r, 0.0]
        top = pen.iloc[int(pen["gold"].values.argmax())]
        frontier = base.loc[base["d"] <= top["d"], "gold"]
        gap = top["gold"] - (frontier.max() if len(frontier) else 0.0)
        assert f"RM {params[r]:,}, penalty 0.5: gap to early stopping: {gap:+.3f}" in line


def test_findings_run_on_their_declared_inputs_alone(smoke_copy, tmp_path):
    """The findings job, replayed in a directory that holds only the files its rule declares:
    the same lines. A file read but not declared would be missing here."""
    import re
    import shlex
    import shutil
    import subprocess

    from conftest import BIN, snakemake_cmd

    r = snakemake_cmd(smoke_copy, "-n", "-p", "-f", "results/findings.txt")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    declared = re.search(r"rule findings:\n\s+input: ([^\n]+)", out).group(1).split(", ")
    cmd = re.search(r"Shell command: (overopt findings [^\n]+)", out).group(1)
    iso = tmp_path / "iso"
    for f in declared:
        (iso / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(smoke_copy / f, iso / f)
    assert not (iso / "results" / "base").exists() and not (iso / "results" / "rm").exists()
    args = shlex.split(cmd.split(" > ")[0])
    args[args.index("--out") + 1] = "findings.txt"
    p = subprocess.run([str(BIN / "overopt"), *args[1:]], cwd=iso, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (iso / "findings.txt").read_text() == (smoke_copy / "results" / "findings.txt").read_text()


def test_replicates_draw_their_own_comparisons_and_pools(tmp_path, smoke_config):
    """replicates: {comparisons: true, pool: true}: seed s of every cell learns from comparison
    sample s and is scored and evaluated on pool s; the findings read the pools as nested."""
    import re

    from conftest import snakemake_cmd
    from overopt.keys import scores_metadata

    cfg = copy.deepcopy(smoke_config)
    cfg.update(policies=["p"], reward_models=["r1", "r2"], data_sizes=[64], seeds=[0, 1], kl_penalties=[0.0],
               replicates={"comparisons": True, "pool": True})
    cfg.pop("subgrids")
    cfg["rl"]["data_sizes"] = [64]
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    res = tmp_path / "results"
    pools = [pd.read_parquet(res / "pool" / f"p.r{s}.parquet") for s in (0, 1)]
    assert [set(p["replicate"]) for p in pools] == [{0}, {1}]
    assert set(pools[0]["prompt"]) != set(pools[1]["prompt"])
    pairs = [pd.read_parquet(res / "comparisons" / f"p.r{s}.parquet") for s in (0, 1)]
    assert not pairs[0]["completion_a"].equals(pairs[1]["completion_a"])
    assert not (res / "pool" / "p.parquet").exists() and not (res / "comparisons" / "p.parquet").exists()
    for s in (0, 1):
        assert scores_metadata(res / "scores" / "p" / "r2" / "n64" / f"s{s}.parquet")["pool"] == s
        assert set(pd.read_csv(res / "rl" / "p" / "r2" / "n64" / "kl0.0" / f"s{s}.by_prompt.csv")["pool"]) == {s}
        dry = snakemake_cmd(tmp_path, "-n", "-f", f"results/rm/p/r2/n64/s{s}")
        inputs = re.search(r"rule train_rm:\n\s+input: ([^\n]+)", dry.stdout + dry.stderr).group(1)
        # the labelled part of its own comparison sample
        assert f"results/comparisons/p.r{s}/part0.parquet" in inputs and f"results/loglik/p/r2.r{s}.pairs.parquet" in inputs
    lines = (res / "findings.txt").read_text().splitlines()
    assert any(l.split()[1] == "F1" for l in lines)


def test_the_robustness_rule_tables_finished_studies(smoke_copy, smoke_config):
    """With `robustness:` in the config, the rule turns finished studies' findings into one table:
    a row per finding, a column per study."""
    from conftest import snakemake_cmd

    cfg = copy.deepcopy(smoke_config)
    cfg["robustness"] = {"out": "robustness.md", "studies": {"smoke, once": "results", "smoke, again": "results"}}
    write_config(smoke_copy, cfg)
    r = snakemake_cmd(smoke_copy, "--cores", "1", "robustness")
    assert r.returncode == 0, r.stderr[-3000:]
    table = [l for l in (smoke_copy / "robustness.md").read_text().splitlines() if l.startswith("| F")]
    findings = [l for l in (smoke_copy / "results" / "findings.txt").read_text().splitlines() if l.split()[1].startswith("F")]
    assert len(table) == len(findings) and "| finding | smoke, once | smoke, again |" in (smoke_copy / "robustness.md").read_text()
    assert all(l.count("|") == 4 for l in table)


def test_smoke_run_writes_findings_and_report(smoke_copy):
    from conftest import snakemake_cmd

    lines = (smoke_copy / "results" / "findings.txt").read_text().splitlines()
    assert lines and all(l.split()[0] in {"PASS", "FAIL", "INCONCLUSIVE", "SKIP", "OK"} for l in lines)
    assert any("larger policy gains less" in l for l in lines)  # the smoke grid has two policies
    r = snakemake_cmd(smoke_copy, "--report", "report.html")
    assert r.returncode == 0, r.stderr[-2000:]
    html = (smoke_copy / "report.html").read_text(errors="replace")
    for f in FIGS:
        assert f"{f}.png" in html


def test_nothing_reruns_after_full_run(smoke_copy):
    assert dry_run(smoke_copy) == set()


def test_changing_one_rm_spec_reruns_only_its_jobs(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["models"]["r2"]["tiny"]["steps"] = 25
    write_config(smoke_copy, cfg)
    # its base's log-likelihood tables too: every proxy on it reads them
    tables = {f"results/loglik/{p}/r2.{t}.parquet" for p in ("p", "p2") for t in ("pairs", "pool")}
    assert dry_run(smoke_copy) == {"results/base/r2"} | tables | per_proxy("r2", 64, rl=False) | per_proxy("r2", 128) | per_proxy(
        "r2", 128, rl=False, policy="p2") | DOWNSTREAM


def test_adding_a_data_size_adds_only_its_jobs(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["data_sizes"] = [64, 128, 96]
    write_config(smoke_copy, cfg)
    # not in rl.data_sizes, so no PPO runs for it
    new = set().union(*(per_proxy(r, 96, rl=False) for r in RMS))
    # RL figures redraw (Fig. 8 reads every best-of-n curve); RL fits do not change
    assert dry_run(smoke_copy) == new | DOWNSTREAM - {"results/fits/rl.csv"}


def test_changing_rm_lr_reruns_every_proxy_but_no_upstream(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["rm_train"]["lr"] = 0.002
    write_config(smoke_copy, cfg)
    got = dry_run(smoke_copy)
    per_rm = set().union(*(per_proxy(r, 64, rl=False) | per_proxy(r, 128) for r in RMS))
    per_rm |= per_proxy("r1", 128, rl=False, policy="p2") | per_proxy("r2", 128, rl=False, policy="p2")
    assert got == per_rm | DOWNSTREAM
    assert not any(p.startswith(("results/base", "results/pool", "results/comparisons", "results/gold")) for p in got)


def test_one_models_rm_lr_reruns_only_its_proxies(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["rm_train"]["lr_by_model"] = {"r2": 0.002, "r1": cfg["rm_train"]["lr"]}  # r1: same value, no rerun
    write_config(smoke_copy, cfg)
    assert dry_run(smoke_copy) == per_proxy("r2", 64, rl=False) | per_proxy("r2", 128) | per_proxy(
        "r2", 128, rl=False, policy="p2") | DOWNSTREAM


def test_readout_lr_reruns_only_the_proxies_whose_lr_it_changes(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["rm_train"]["readout_lr"] = cfg["rm_train"]["lr"]  # what every proxy already trains at
    write_config(smoke_copy, cfg)
    assert dry_run(smoke_copy) == set()
    cfg["rm_train"]["lr_by_model"] = {"r2": cfg["rm_train"]["lr"]}  # r2 the same lr, by another key
    cfg["rm_train"]["readout_lr"] = 0.0005
    write_config(smoke_copy, cfg)
    got = dry_run(smoke_copy)
    assert "results/rm/p/r2/n64/s0" in got and "results/base/r2" not in got
    assert not any(p.startswith(("results/base", "results/pool", "results/comparisons", "results/gold")) for p in got)
    # the readout's cap: turning it off reruns every proxy and what reads them, nothing upstream
    cfg = copy.deepcopy(smoke_config)
    cfg["rm_train"]["readout_cap"] = False
    write_config(smoke_copy, cfg)
    got = dry_run(smoke_copy)
    assert {p for p in got if p.startswith("results/rm/")} == {str(d.relative_to(smoke_copy)) for d in (smoke_copy / "results/rm").glob("*/*/n*/s*")}
    assert not any(p.startswith(("results/base", "results/pool", "results/comparisons", "results/gold")) for p in got)


def test_a_proxy_waits_only_on_the_labelled_parts_of_its_data_size(smoke_copy):
    """comparisons.part_pairs 64: the proxies of 64 pairs read part 0 (with the validation pairs),
    those of 128 parts 0 and 1."""
    import re

    from conftest import snakemake_cmd

    for data, parts in ((64, {"part0"}), (128, {"part0", "part1"})):
        dry = snakemake_cmd(smoke_copy, "-n", "-f", f"results/rm/p/r1/n{data}/s0")
        inputs = re.search(r"rule train_rm:\n\s+input: ([^\n]+)", dry.stdout + dry.stderr).group(1)
        assert set(re.findall(r"results/comparisons/p/(part\d+)\.parquet", inputs)) == parts, inputs
