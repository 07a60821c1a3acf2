"""The GRM world's gold (`gold.learned`): a reward model trained on the hand-written gold's labels,
then frozen, is the gold every later job reads."""

import copy
import re
import json

import numpy as np
import pandas as pd
import pytest

from conftest import snakemake_cmd, write_config


def _config(smoke_config):
    cfg = copy.deepcopy(smoke_config)
    cfg["gold"]["learned"] = {"base": "g", "policy": "p", "pairs": 512, "val_pairs": 128, "lr": 3e-3}
    return cfg


def test_the_learned_gold_is_what_labels_and_scores_read(smoke_config, tmp_path):
    from overopt.gold import LearnedGold, TinyGold, load_gold

    write_config(tmp_path, _config(smoke_config))
    r = snakemake_cmd(tmp_path, "--cores", "2", "results/pool/p.gold.parquet", "results/comparisons/p.parquet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = tmp_path / "results"
    gold, teacher = load_gold(res / "gold"), load_gold(res / "gold_teacher")
    assert isinstance(gold, LearnedGold) and isinstance(teacher, TinyGold)
    meta = json.loads((res / "gold" / "gold.json").read_text())
    assert meta["kind"] == "learned" and meta["base"] == "g" and 0 <= meta["val_acc"] <= 1
    # the gold RM trained on the teacher's labels of its own pairs, which are not the proxies'
    rm_pairs = pd.read_parquet(res / "gold_rm" / "comparisons.parquet")
    assert len(rm_pairs) == 512 + 128 and (rm_pairs["label"] == rm_pairs["gold_label"]).all()
    cmp = pd.read_parquet(res / "comparisons" / "p.parquet")
    assert not set(zip(cmp["prompt"], cmp["completion_a"])) & set(zip(rm_pairs["prompt"], rm_pairs["completion_a"]))
    # the proxies' labels and the pool's gold scores are the learned gold's, not the teacher's
    ga, gb = (gold.score(cmp["prompt"].tolist(), cmp[c].tolist()) for c in ("completion_a", "completion_b"))
    np.testing.assert_array_equal(cmp["gold_label"].to_numpy(), (ga > gb).astype(cmp["gold_label"].dtype))
    ta, tb = (teacher.score(cmp["prompt"].tolist(), cmp[c].tolist()) for c in ("completion_a", "completion_b"))
    assert ((ta > tb) != (ga > gb)).any()
    pool = pd.read_parquet(res / "pool" / "p.parquet")
    scored = pd.read_parquet(res / "pool" / "p.gold.parquet")
    np.testing.assert_allclose(scored["gold_raw"].to_numpy(), gold.score(pool["prompt"].tolist(), pool["completion"].tolist()),
                               rtol=0, atol=1e-5)


def test_plan_counts_the_learned_gold_jobs(smoke_config, tmp_path):
    import re

    from overopt.config import validate
    from overopt.plan import plan

    cfg = _config(smoke_config)
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "-n")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    stats = r.stdout[r.stdout.index("Job stats"):]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    counts.pop("all"), counts.pop("total")
    assert counts["gold_rm"] == counts["gold_learned"] == 1
    assert {k: v for k, v in plan(validate(cfg))["jobs"].items() if v} == counts


@pytest.mark.parametrize("edit, key", [
    (lambda g: g.pop("tiny"), "gold.learned"),
    (lambda g: g["learned"].update(base="nope"), "gold.learned.base"),
    (lambda g: g["learned"].update(policy="r1"), "gold.learned.policy"),
])
def test_a_bad_learned_gold_names_the_key(smoke_config, edit, key):
    from overopt.config import ConfigError, validate

    cfg = _config(smoke_config)
    edit(cfg["gold"])
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        validate(cfg)
