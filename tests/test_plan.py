"""The example real-scale config validates, dry-runs offline, and `overopt plan` agrees with Snakemake."""

import re

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
    assert counts["train_rm"] == counts["score_proxy"] == counts["bon_curve"] == 20
    assert counts["ppo"] == 10 and counts["model_spec"] == 6 and counts["prompts"] == 1
    assert "pretrain" not in counts and "tokenizer" not in counts
    p = plan(cfg)
    assert {k: v for k, v in counts.items() if k not in ("all", "total")} == p["jobs"]
    assert 10 < sum(p["gpu_hours"].values()) < 10_000


def test_plan_matches_the_smoke_dry_run(smoke_config, tmp_path):
    from conftest import write_config

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
