"""The smoke config on a real SLURM scheduler through `snakemake --profile profiles/slurm`.

Every job of a non-local rule is an sbatch job (read back from the controller by the run's job
name), the aggregation rules run in Snakemake itself, and one job is killed for memory and
succeeds on retry. Skipped without `sinfo`, a controller that answers, the executor plugin or the
partition: `.ci/run` brings up a single-node cluster on localhost (`.ci/slurm-up`) for this and
sets OVEROPT_SLURM_REQUIRED, which turns those skips into failures.

The failure is injected from the command line, not in the workflow: `--set-resources` gives the
tokenizer 40 MB on attempt 1 (below what Python needs, so SLURM kills it for memory) and 1000 MB
from attempt 2, which is how a site would pin a rule's memory by attempt.
"""

import os
import re
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import BIN, ROOT, write_config

pytestmark = pytest.mark.slurm

PARTITION = os.environ.get("OVEROPT_SLURM_PARTITION", "debug")
TIMEOUT_S = 1800  # the smoke DAG takes ~5 min here; SIGINT lets Snakemake cancel its jobs


def _why_not():
    """Why this machine cannot run the test, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "scontrol ping did not answer"
    if "is UP" not in ping.stdout:
        return "no SLURM controller answers (.ci/slurm-up starts one)"
    parts = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20).stdout.split()
    if PARTITION not in parts:
        return f"no partition {PARTITION!r} (set OVEROPT_SLURM_PARTITION)"
    return None


def _job_stats(out):
    """Snakemake's `Job stats` table at the start of a run: {rule: count}."""
    block = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, smoke_config):
    why = _why_not()
    if why and os.environ.get("OVEROPT_SLURM_REQUIRED"):
        pytest.fail(f"OVEROPT_SLURM_REQUIRED is set but {why}")
    if why:
        pytest.skip(why)
    wd = tmp_path_factory.mktemp("slurm")
    # the pool in shards of 3 of its 4 prompts: the cluster path of a real-scale study
    write_config(wd, {**smoke_config, "bon": {**smoke_config["bon"], "shard_prompts": 3}})
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        "timeout", "-s", "INT", "-k", "60", str(TIMEOUT_S),
        str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
        "--profile", str(ROOT / "profiles" / "slurm"),
        "--default-resources", f"slurm_partition={PARTITION}",
        "--set-resources", "tokenizer:mem_mb=40 if attempt == 1 else 1000",
        # poll from 2 s on instead of 40 s: the same protocol, minutes shorter on 40 short jobs
        "--slurm-init-seconds-before-status-checks", "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=wd)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    run_id = re.search(r"SLURM run ID: (\S+)", out)[1]
    q = subprocess.run(["squeue", "-h", "--states=all", "--name", run_id, "-o", "%i|%T|%k|%m|%P"],
                       capture_output=True, text=True, check=True).stdout
    jobs = sorted((int(i), state, comment, mem, part)
                  for i, state, comment, mem, part in (line.split("|") for line in q.split()))
    return wd, out, jobs


def _rule(comment):
    return re.match(r"rule_(.+?)(_wildcards_.*)?$", comment)[1]


def test_slurm_smoke_every_job_a_slurm_job(slurm_run):
    wd, out, jobs = slurm_run
    stats = _job_stats(out)
    local = set(re.findall(r"^localrule (\w+):", out, re.M))
    assert {"rm_table", "fit_bon", "fig_bon", "findings"} <= local  # aggregation stays off the queue
    remote = {r: n for r, n in stats.items() if r not in local and r != "all"}
    assert {"tokenizer", "pretrain", "train_rm", "pool_shard", "score_gold_shard", "score_proxy_shard",
            "merge_scores", "ppo"} <= set(remote)
    completed = Counter(_rule(c) for _, state, c, _, _ in jobs if state == "COMPLETED")
    assert completed == Counter(remote), (completed, remote)
    assert {part for *_, part in jobs} == {PARTITION}  # the command-line partition reached sbatch
    for target in ["tables/rm_metrics.csv", "fits/bon.csv", "fits/rl.csv", "fits/scaling.csv",
                   "fits/forecast.csv", "fits/extrapolation.csv", "findings.txt",
                   "figures/fig01_bon.pdf", "figures/fig01_rl.pdf", "figures/fig03_scaling.png"]:
        assert (wd / "results" / target).is_file(), target


def test_slurm_job_killed_for_memory_is_retried(slurm_run):
    wd, out, jobs = slurm_run
    failed = [j for j in jobs if j[1] not in ("COMPLETED",)]
    assert [(_rule(c), state) for _, state, c, _, _ in failed] in (
        [("tokenizer", "FAILED")], [("tokenizer", "OUT_OF_MEMORY")])
    tok = [j for j in jobs if _rule(j[2]) == "tokenizer"]
    assert [(state, mem) for _, state, _, mem, _ in tok] == [(failed[0][1], "40M"), ("COMPLETED", "1000M")]
    assert "Trying to restart job" in out
    # the failed job's SLURM log (kept by the plugin) says why: SLURM's memory enforcement
    log = wd / ".snakemake" / "slurm_logs" / "rule_tokenizer" / f"{tok[0][0]}.log"
    assert "exceeded memory limit" in log.read_text()
    assert (wd / "results" / "tokenizer").is_dir()
