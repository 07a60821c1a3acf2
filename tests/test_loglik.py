"""The base log-likelihood tables: a proxy trained and scored from them equals one that runs its
base itself (the tables are a cache, not a change of numbers)."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from overopt.text import corpus_split
from conftest import labelled_pairs, tiny_base


def test_proxies_from_the_tables_equal_proxies_that_run_their_base(tmp_path):
    from overopt.pool import score_proxy
    from overopt.loglik import pairs_table, pool_table
    from overopt.rm import train_rm

    base, _ = tiny_base(tmp_path, seed=0)
    df = labelled_pairs(tmp_path)
    pairs_table(str(base), str(tmp_path / "cmp.parquet"), str(tmp_path / "ll.pairs.parquet"))
    kw = dict(policy="p", rm="r", comparisons=str(tmp_path / "cmp.parquet"), seed=0, epochs=1, batch_size=16, lr=1e-3, threads=1,
              base_loglik=True, readout_cap=True)
    for n in (300, 500):  # a data size below the table's pairs reads a prefix of it
        own = train_rm(str(base), out=str(tmp_path / f"own{n}"), data_size=n, **kw)
        cached = train_rm(str(base), out=str(tmp_path / f"cached{n}"), data_size=n, loglik=str(tmp_path / "ll.pairs.parquet"), **kw)
        for k in ("val_loss", "val_acc", "base_loglik_weight", "base_loglik_cap"):
            assert cached[k] == pytest.approx(own[k], rel=1e-5, abs=1e-6), k
        a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in (f"own{n}", f"cached{n}"))
        for k in a:
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-4, atol=1e-6)
        assert json.loads((tmp_path / f"cached{n}" / "readout.json").read_text())["base_loglik_weight"] != 0
    # and the proxy learns from the table it is given: changed entries change it
    t = pd.read_parquet(tmp_path / "ll.pairs.parquet")
    t[["loglik_a", "loglik_b"]] = t[["loglik_b", "loglik_a"]].to_numpy()
    t.to_parquet(tmp_path / "ll.swapped.parquet")
    swapped = train_rm(str(base), out=str(tmp_path / "swapped"), data_size=300, loglik=str(tmp_path / "ll.swapped.parquet"), **kw)
    weight = json.loads((tmp_path / "cached300" / "readout.json").read_text())["base_loglik_weight"]
    assert swapped["base_loglik_weight"] != pytest.approx(weight, rel=1e-3)

    pool = pd.DataFrame({"prompt_id": np.repeat(np.arange(3), 16), "sample_id": np.tile(np.arange(16), 3),
                         "prompt": np.repeat(df["prompt"].to_numpy()[:3], 16), "completion": df["completion_a"].to_numpy()[:48]})
    pool.to_parquet(tmp_path / "pool.parquet")
    pool[["prompt_id", "sample_id"]].assign(gold=0.0).to_parquet(tmp_path / "gold.parquet")
    pool_table(str(base), str(tmp_path / "pool.parquet"), str(tmp_path / "ll.pool.parquet"))
    args = (str(tmp_path / "pool.parquet"), str(tmp_path / "gold.parquet"), str(tmp_path / "cached500"))
    score_proxy(*args, str(tmp_path / "own.parquet"), threads=1, dtype="float32")
    score_proxy(*args, str(tmp_path / "cached.parquet"), threads=1, dtype="float32", loglik=str(tmp_path / "ll.pool.parquet"))
    own, cached = (pd.read_parquet(tmp_path / f).sort_values(["prompt_id", "sample_id"]) for f in ("own.parquet", "cached.parquet"))
    np.testing.assert_allclose(cached["proxy"].to_numpy(), own["proxy"].to_numpy(), rtol=0, atol=1e-6)
    assert own["proxy"].std() > 0
    # the scores are read from the table, not recomputed beside it: a changed entry moves its own
    # score, and the others only by the shift of the pool's mean
    t = pd.read_parquet(tmp_path / "ll.pool.parquet")
    t.loc[0, "loglik"] -= 5.0
    t.to_parquet(tmp_path / "ll.edited.parquet")
    score_proxy(*args, str(tmp_path / "edited.parquet"), threads=1, dtype="float32", loglik=str(tmp_path / "ll.edited.parquet"))
    edited = pd.read_parquet(tmp_path / "edited.parquet").set_index(["prompt_id", "sample_id"])["proxy"]
    diff = edited - cached.set_index(["prompt_id", "sample_id"])["proxy"]
    key = tuple(int(x) for x in t.loc[0, ["prompt_id", "sample_id"]])
    others = diff.drop(key)
    assert abs(diff[key] - others.iloc[0]) > 1e-3 and np.ptp(others.to_numpy()) < 1e-5

    # a table of other texts is refused, naming the file
    pool.assign(prompt_id=pool["prompt_id"] + 10).to_parquet(tmp_path / "other.parquet")
    pool_table(str(base), str(tmp_path / "other.parquet"), str(tmp_path / "ll.other.parquet"))
    with pytest.raises(ValueError, match="ll.other.parquet"):
        score_proxy(*args, str(tmp_path / "x.parquet"), threads=1, dtype="float32", loglik=str(tmp_path / "ll.other.parquet"))


def test_a_table_of_the_pairs_its_proxies_read_has_the_full_tables_numbers(tmp_path):
    """A base's table of the first N training pairs and every validation pair (the largest data
    size of its proxies) holds each of them with the full table's numbers to the bit; a proxy of a
    larger data size is refused it, naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from overopt.keys import META
    from overopt.loglik import pairs_table
    from overopt.rm import train_rm

    base, _ = tiny_base(tmp_path, seed=0)
    df = labelled_pairs(tmp_path)  # 500 training pairs, then 100 for validation
    table = pa.Table.from_pandas(df[["pair_id", "prompt", "completion_a", "completion_b"]], preserve_index=False)
    meta = json.dumps({"train_pairs": 500, "val_pairs": 100}).encode()
    pq.write_table(table.replace_schema_metadata({META: meta}), tmp_path / "pairs.parquet")
    pairs_table(str(base), str(tmp_path / "pairs.parquet"), str(tmp_path / "full.parquet"))
    pairs_table(str(base), str(tmp_path / "pairs.parquet"), str(tmp_path / "part.parquet"), train_pairs=300)
    full, part = (pd.read_parquet(tmp_path / f) for f in ("full.parquet", "part.parquet"))
    assert part["pair_id"].tolist() == list(range(300)) + list(range(500, 600))
    pd.testing.assert_frame_equal(part, full.set_index("pair_id").loc[part["pair_id"]].reset_index(), check_exact=True)

    kw = dict(policy="p", rm="r", comparisons=str(tmp_path / "cmp.parquet"), seed=0, epochs=1, batch_size=16, lr=1e-3,
              threads=1, base_loglik=True, readout_cap=True)
    train_rm(str(base), out=str(tmp_path / "from_part"), data_size=300, loglik=str(tmp_path / "part.parquet"), **kw)
    with pytest.raises(ValueError, match="part.parquet"):
        train_rm(str(base), out=str(tmp_path / "too_many"), data_size=400, loglik=str(tmp_path / "part.parquet"), **kw)
    with pytest.raises(ValueError, match="pairs.parquet: 500 training pairs"):
        pairs_table(str(base), str(tmp_path / "pairs.parquet"), str(tmp_path / "x.parquet"), train_pairs=501)
