"""The smoke DAG end to end through Snakemake, and incremental reruns via its Python API."""

import copy
import json
from pathlib import Path

import pandas as pd
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

from conftest import ROOT, write_config


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
    n = len(smoke_config["policies"]) * len(smoke_config["reward_models"]) * len(smoke_config["data_sizes"]) * len(smoke_config["seeds"])
    assert len(table) == n
    for p in (smoke_run / "results" / "rm").glob("*/*/n*/s*"):
        m = json.loads((p / "metrics.json").read_text())
        assert {"params", "val_loss", "val_acc", "train_pairs"} <= set(m)
        assert (p / "model.safetensors").exists()
        assert m["train_pairs"] == int(p.parent.name[1:])
    cmp = pd.read_parquet(smoke_run / "results" / "comparisons" / "p.parquet")
    both = pd.concat([cmp["gold_a"], cmp["gold_b"]])
    assert abs(both.mean()) < 1e-6 and abs(both.std(ddof=0) - 1) < 1e-6  # standardised on pi_init samples
    assert not list((smoke_run / "results").rglob(".*tmp-*"))  # no half-written leftovers


def test_nothing_reruns_after_full_run(smoke_copy):
    assert dry_run(smoke_copy) == set()


def test_changing_one_rm_spec_reruns_only_its_jobs(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["models"]["r2"]["tiny"]["steps"] = 25
    write_config(smoke_copy, cfg)
    assert dry_run(smoke_copy) == {
        "results/base/r2",
        "results/rm/p/r2/n64/s0",
        "results/rm/p/r2/n128/s0",
        "results/tables/rm_metrics.csv",
    }


def test_adding_a_data_size_adds_only_its_jobs(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["data_sizes"] = [64, 128, 96]
    write_config(smoke_copy, cfg)
    assert dry_run(smoke_copy) == {"results/rm/p/r1/n96/s0", "results/rm/p/r2/n96/s0", "results/tables/rm_metrics.csv"}


def test_changing_rm_lr_reruns_every_proxy_but_no_upstream(smoke_copy, smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["rm_train"]["lr"] = 0.002
    write_config(smoke_copy, cfg)
    got = dry_run(smoke_copy)
    assert got == {f"results/rm/p/{r}/n{n}/s0" for r in ("r1", "r2") for n in (64, 128)} | {"results/tables/rm_metrics.csv"}
