"""Resources grow with model size and double per attempt (workflow/rules/common.smk, Resources),
read from Snakemake's own dry-run, so a job killed for memory or time is retried with more; a GPU
job's runtime is its cost model's request (`plan.requested_minutes`, checked against the cost
model on config/pythia.yaml in test_plan.py).
(That the aggregation rules run locally under a cluster executor is checked in test_slurm.py.)"""

import re

import pytest

from conftest import snakemake_cmd, write_config


def _jobs(out):
    """(rule, wildcards dict, resources dict) for every job block of a dry-run."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", out, re.M):
        body = m[2]
        wc = re.search(r"^    wildcards: (.*)$", body, re.M)
        res = re.search(r"^    resources: (.*)$", body, re.M)
        parse = lambda s: dict(kv.split("=", 1) for kv in s.split(", ")) if s else {}  # noqa: E731
        pri = re.search(r"^    priority: (\d+)$", body, re.M)
        thr = re.search(r"^    threads: (\d+)$", body, re.M)
        jobs.append((m[1], parse(wc[1] if wc else ""), {**parse(res[1] if res else ""), "priority": int(pri[1]) if pri else 0,
                                                        "threads": int(thr[1]) if thr else 1}))
    return jobs


def _config(smoke_config):
    """The smoke config with one proxy swapped for a 1B-parameter hf model."""
    return {**smoke_config, "models": {**smoke_config["models"], "r3": {"hf": "org/rm-1b", "params": 1e9}}}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory, smoke_config):
    """Dry-runs of `_config`, attempts 1 and 2."""
    wd = tmp_path_factory.mktemp("resources")
    write_config(wd, _config(smoke_config))
    runs = {}
    for attempt in (1, 2):
        r = snakemake_cmd(wd, "-n", "--attempt", str(attempt))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs[attempt] = _jobs(r.stdout)
    return runs


def _res(jobs, rule, **wildcards):
    """(mem_mb, runtime, gpu) of the one job of `rule` with these wildcards."""
    hits = [res for name, wc, res in jobs if name == rule and all(wc.get(k) == v for k, v in wildcards.items())]
    assert len(hits) == 1, (rule, wildcards, len(hits))
    return int(hits[0]["mem_mb"]), int(hits[0]["runtime"]), hits[0].get("gpu")


def test_resources_scale_with_model_size(dry_runs, smoke_config):
    from overopt.config import validate
    from overopt.plan import Costs, requested_minutes

    cfg = validate(_config(smoke_config))
    asked = lambda rule, **w: requested_minutes(cfg, Costs(cfg).job(rule, **w)[0])  # noqa: E731
    jobs = dry_runs[1]
    tiny = _res(jobs, "train_rm", policy="p", rm="r1", data="64")
    big = _res(jobs, "train_rm", policy="p", rm="r3", data="64")
    assert tiny == (3000, 30, "0")  # the base: a tiny model adds under a megabyte
    # + 4 bytes per parameter of host memory; the runtime of its cost (the 10-minute floor here); a GPU
    assert big == (3000 + 4000, asked("train_rm", rm="r3", data=64), "1") and big[1] == 10
    assert _res(jobs, "score_proxy", policy="p", rm="r3", data="64")[:2] == (8000, asked("score_proxy", rm="r3"))
    assert _res(jobs, "tokenizer") == (1000, 5, None)


def test_resources_double_per_attempt(dry_runs):
    for rule, wc in [("train_rm", {"policy": "p", "rm": "r3", "data": "128"}),
                     ("ppo", {"policy": "p", "rm": "r2", "kl": "0.0"}), ("tokenizer", {}), ("fit_bon", {})]:
        mem1, rt1, gpu1 = _res(dry_runs[1], rule, **wc)
        mem2, rt2, gpu2 = _res(dry_runs[2], rule, **wc)
        assert (mem2, gpu2) == (2 * mem1, gpu1), rule
        assert 2 * rt1 <= rt2 <= 2 * rt1 + 1, rule


def test_scheduling_runs_the_gold_reference_then_the_ppo_chain_first(dry_runs):
    """Priorities (common.smk, Scheduling): the gold's reference LM before the policies' bases
    before the proxies' bases; a PPO cell's proxy and scores before another cell's."""
    jobs = dry_runs[1]
    pri = lambda rule, **wc: [r["priority"] for n, w, r in jobs  # noqa: E731
                              if n == rule and all(w.get(k) == v for k, v in wc.items())]
    assert pri("pretrain", model="g") == [10] and pri("pretrain", model="p") == [2] and pri("pretrain", model="r1") == [1]
    for rule in ("train_rm", "score_proxy"):
        assert set(pri(rule, policy="p", data="128")) == {2}  # rl.data_sizes: [128], rl.policies: [p]
        assert set(pri(rule, policy="p", data="64")) == {1} and set(pri(rule, policy="p2")) == {1}
    assert set(pri("ppo")) == {2} and pri("gold") == [3]
    # a tie with the pools' gold scoring once started the proxies' comparisons 70 s late
    assert min(pri("labels")) > max(pri("score_gold_part"))


@pytest.mark.parametrize("cores, gold", [(1, 1), (2, 2), (16, 2)])
def test_the_gold_lm_pretrains_on_2_threads_and_every_other_lm_on_one(tmp_path, smoke_config, cores, gold):
    """It heads the longest chain of jobs; Snakemake caps a job's threads at --cores."""
    write_config(tmp_path, smoke_config)
    r = snakemake_cmd(tmp_path, "-n", "--cores", str(cores))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    threads = {wc["model"]: res["threads"] for rule, wc, res in _jobs(r.stdout) if rule == "pretrain"}
    assert threads == {m: gold if m == smoke_config["gold"]["tiny"]["reference"] else 1 for m in smoke_config["models"]}
