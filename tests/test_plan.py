"""The example real-scale config validates, dry-runs offline, and `overopt plan` agrees with Snakemake."""

import re

import pytest
import yaml

from conftest import ROOT, snakemake_cmd
from overopt.config import validate
from overopt.plan import plan

PYTHIA = ROOT / "config" / "pythia.yaml"


def _dry_run_counts(*args):
    r = snakemake_cmd(ROOT, "-n", *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stats = r.stdout[r.stdout.index("Job stats"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_pythia_config_dry_runs_with_the_expected_jobs(monkeypatch):
    cfg = validate(yaml.safe_load(PYTHIA.read_text()))
    assert cfg["gold"]["quantize"] == "4bit" and cfg["bon"]["samples"] == 12_500 and cfg["bon"]["prompts"] == 1000
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a dry run must not touch the hub
    counts = _dry_run_counts("--configfile", str(PYTHIA), "--replace-workflow-config")
    # 5 proxies x 4 data sizes x 1 seed; PPO on the 46k cell of each proxy x 2 KL penalties
    assert counts["train_rm"] == counts["merge_scores"] == counts["bon_curve"] == 20
    assert counts["score_proxy_shard"] == 20 * 10 and counts["score_gold_shard"] == counts["pool_shard"] == 10
    assert counts["ppo"] == 10 and counts["model_spec"] == 6 and counts["prompts"] == 1
    assert "pretrain" not in counts and "tokenizer" not in counts
    p = plan(cfg)
    assert {k: v for k, v in counts.items() if k not in ("all", "total")} == p["jobs"]
    assert 10 < sum(p["gpu_hours"].values()) < 10_000


@pytest.mark.parametrize("shard_prompts", [None, 3])
def test_plan_matches_the_smoke_dry_run(smoke_config, tmp_path, shard_prompts):
    import copy

    from conftest import write_config

    smoke_config = copy.deepcopy(smoke_config)
    smoke_config["bon"]["shard_prompts"] = shard_prompts
    write_config(tmp_path, smoke_config)
    r = snakemake_cmd(tmp_path, "-n")
    stats = r.stdout[r.stdout.index("Job stats"):]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    counts.pop("all"), counts.pop("total")
    jobs = {k: v for k, v in plan(validate(smoke_config))["jobs"].items() if v}
    assert jobs == counts


def test_subgrid_seeds_and_rl_seeds_reach_the_dag(smoke_config, tmp_path):
    """A sub-grid's own seeds replace the top-level ones for its cells (the union where sub-grids
    share a cell), and rl.seeds keeps PPO to some of them: counted by Snakemake and by `plan`."""
    import copy

    from conftest import write_config
    from overopt.config import cell_seeds

    cfg = copy.deepcopy(smoke_config)
    cfg["subgrids"] = [{"policies": ["p"], "data_sizes": [128], "seeds": [0, 1, 2]},  # 3 RMs x 3 seeds
                       {"policies": ["p"], "reward_models": ["r1"]},  # r1 at 64 and 128 x seed 0
                       {"policies": ["p2"], "reward_models": ["r1", "r2"], "data_sizes": [128]}]  # 2 x seed 0
    cfg["rl"]["seeds"] = [0, 2]
    seeds = cell_seeds(validate(copy.deepcopy(cfg)))
    assert seeds[("p", "r1", 128)] == [0, 1, 2] and seeds[("p", "r1", 64)] == [0] and seeds[("p2", "r2", 128)] == [0]
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "-n")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stats = r.stdout[r.stdout.index("Job stats"):]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert counts["train_rm"] == 9 + 1 + 2
    # PPO on p at 128 (rl.data_sizes): 3 RMs x seeds {0, 2} x KL penalties {0, 0.5}
    assert counts["ppo"] == 3 * 2 * 2
    counts.pop("all"), counts.pop("total")
    assert {k: v for k, v in plan(validate(cfg))["jobs"].items() if v} == counts
    # an rl seed that no cell has is refused before any job
    cfg["rl"]["seeds"] = [5]
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "-n")
    assert r.returncode != 0 and "rl.seeds[0]" in r.stdout + r.stderr


def _dry_run_jobs(*args):
    """Every job of a dry run: its rule, wildcards, threads and resources."""
    r = snakemake_cmd(ROOT, "-n", *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", r.stdout)[1:]:
        w = re.search(r"^    wildcards: (.*)$", block, re.M)
        res = re.search(r"^    resources: (.*)$", block, re.M)
        t = re.search(r"^    threads: (\d+)$", block, re.M)
        jobs.append({"rule": re.match(r"rule (\w+):", block)[1],
                     "wildcards": dict(kv.split("=", 1) for kv in w[1].split(", ")) if w else {},
                     "threads": int(t[1]) if t else 1,
                     "resources": dict(kv.split("=", 1) for kv in res[1].split(", ")) if res else {}})
    return jobs


def test_pythia_jobs_ask_for_their_estimates_within_the_caps(monkeypatch):
    """Issue 29's bar: every GPU job asks for at least its estimated runtime and at most the site's
    cap, for at most the GPU's memory, and uses the CPUs it reserves; no job is estimated above 8
    GPU-hours, and the critical path is at most a fifth of the GPU-hours."""
    from overopt.plan import GIB, Costs

    cfg = validate(yaml.safe_load(PYTHIA.read_text()))
    c, costs = cfg["cluster"], Costs(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    jobs = _dry_run_jobs("--cores", "8", "--configfile", str(PYTHIA), "--replace-workflow-config")
    gpu_jobs = [j for j in jobs if j["resources"].get("gpu") == "1"]
    assert {j["rule"] for j in gpu_jobs} == {"pairs", "labels", "pool_shard", "score_gold_shard", "train_rm",
                                            "score_proxy_shard", "ppo"}
    for j in gpu_jobs:
        w = j["wildcards"]
        flops, mem = costs.job(j["rule"], policy=w.get("policy"), rm=w.get("rm"),
                               data=int(w["data"]) if "data" in w else None,
                               shard=int(w.get("shard", w.get("part"))) if {"shard", "part"} & set(w) else None)
        estimate_min = costs.hours(flops) * 60
        runtime = int(j["resources"]["runtime"])
        assert estimate_min <= runtime <= c["max_runtime_h"] * 60, j
        assert costs.hours(flops) <= 8, j
        assert 0 < int(j["resources"]["gpu_mem_mb"]) <= c["gpu_memory_gb"] * GIB / 1e6, j
        assert j["threads"] == c["gpu_threads"], j
    p = plan(cfg)
    assert not p["refused"]
    assert max(p["longest_h"].values()) <= 8
    assert p["critical_h"] <= sum(p["gpu_hours"].values()) / 5
    # the same study in one job per pool: the gold's job cannot fit the runtime cap, and plan says which
    cfg["bon"].update(shard_prompts=None, gold_parts=1)
    refused = plan(cfg)["refused"]
    assert refused and refused[0].startswith("score_gold_part(pythia-1.4b-policy, 0)") and "bon.gold_parts" in refused[0]
    cfg["bon"]["gold_parts"] = 4  # ... and in 4 parts it does
    assert not plan(cfg)["refused"]


def test_plan_refuses_a_job_that_does_not_fit_the_gpu():
    cfg = validate(yaml.safe_load(PYTHIA.read_text()))
    cfg["cluster"]["gpu_memory_gb"] = 24
    refused = plan(cfg)["refused"]
    # full fine-tuning of the 1.4B proxy (weights, gradients, Adam) does not fit 24 GB; the 70M does
    assert any(r.startswith("train_rm(pythia-1.4b-policy, pythia-1.4b,") and "cluster.gpu_memory_gb" in r for r in refused)
    assert not any("pythia-70m" in r for r in refused)
