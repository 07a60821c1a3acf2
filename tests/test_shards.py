"""A pool sampled and scored in shards (`bon.shard_prompts`) is the same pool, with the same scores,
whatever the shard size: each prompt draws from its own seed (the samples are equal to the bit),
every score is per sample (equal to float rounding: a batch of other texts may round a sum
differently), and the pool-wide statistics (the gold's standardisation, the proxy's pi_init mean)
are taken after the merge."""

import copy

import pandas as pd
import pytest

from conftest import labelled_pairs, snakemake_cmd, tiny_base, write_config

ROUNDING = dict(check_exact=False, rtol=0, atol=1e-5)
SHARDINGS = [[(0, 5)], [(0, 2), (2, 4), (4, 5)], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]]


def test_shards_of_any_size_give_the_same_pool_and_scores(tmp_path):
    from overopt.gold import build_gold
    from overopt.keys import scores_metadata
    from overopt.loglik import pool_table
    from overopt.pool import make_pool, merge_gold, merge_pool, merge_scores, score_gold, score_proxy
    from overopt.rm import train_rm
    from overopt.text import corpus_split

    train, held = corpus_split()
    base, _ = tiny_base(tmp_path, seed=0)
    gold = str(tmp_path / "gold")
    build_gold({"tiny": {"terms": {"count": 1.0, "fluency": 0.5}, "reward_chars": ".,e", "fluency_ngram": 3}},
               gold, None, held, 8, 8, seed=0, train_text=train)
    labelled_pairs(tmp_path)
    rm = str(tmp_path / "rm")
    train_rm(str(base), out=rm, policy="p", rm="r", comparisons=str(tmp_path / "cmp.parquet"), data_size=300, seed=0,
             epochs=1, batch_size=16, lr=1e-3, threads=1, base_loglik=True, readout_cap=True)

    got = []
    for i, shards in enumerate(SHARDINGS):
        d = tmp_path / f"sharding{i}"
        d.mkdir()
        parts = []
        for k, (lo, hi) in enumerate(shards):
            pool = str(d / f"pool{k}.parquet")
            make_pool(str(base), pool, prompts=5, samples=12, prompt_chars=8, completion_tokens=8, batch_size=16,
                      seed=1, threads=1, replicate=2, shard=(lo, hi))
            score_gold(pool, gold, str(d / f"gold{k}.parquet"), threads=1, raw=True)
            pool_table(str(base), pool, str(d / f"ll{k}.parquet"))
            score_proxy(pool, None, rm, str(d / f"scores{k}.parquet"), threads=1, dtype="float32",
                        loglik=str(d / f"ll{k}.parquet"))
            parts.append(k)
        files = lambda stem: [str(d / f"{stem}{k}.parquet") for k in parts]
        merge_pool(files("pool"), str(d / "pool.parquet"))
        merge_gold(files("gold"), str(d / "gold.parquet"))
        merge_pool(files("ll"), str(d / "ll.parquet"))  # a per-sample table merges as a pool does
        merge_scores(files("scores"), str(d / "gold.parquet"), str(d / "scores.parquet"))
        got.append({f: pd.read_parquet(d / f"{f}.parquet") for f in ("pool", "gold", "ll", "scores")})
        got[-1]["meta"] = scores_metadata(str(d / "scores.parquet"))

    one = got[0]
    assert len(one["pool"]) == 5 * 12 and one["pool"]["prompt_id"].nunique() == 5
    assert one["pool"]["completion"].nunique() > 30  # samples differ within a prompt
    assert one["meta"]["pool"] == 2 and one["meta"]["keys"] == {"policy": "p", "rm": "r", "data": 300, "seed": 0}
    for other in got[1:]:
        pd.testing.assert_frame_equal(other["pool"], one["pool"], check_exact=True)
        for f in ("gold", "ll", "scores"):
            pd.testing.assert_frame_equal(other[f], one[f], **ROUNDING)
        assert other["meta"].pop("proxy_offset") == pytest.approx(one["meta"]["proxy_offset"], abs=1e-6)
        assert other["meta"] == {k: v for k, v in one["meta"].items() if k != "proxy_offset"}

    # the whole pool's own scoring (pool.smk's jobs) gives the merged scores of its shards, to the bit
    d = tmp_path / "sharding1"
    score_gold(str(d / "pool.parquet"), gold, str(tmp_path / "whole.gold.parquet"), threads=1)
    score_proxy(str(d / "pool.parquet"), str(tmp_path / "whole.gold.parquet"), rm, str(tmp_path / "whole.parquet"),
                threads=1, dtype="float32", loglik=str(d / "ll.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "whole.gold.parquet"), got[1]["gold"], **ROUNDING)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "whole.parquet"), got[1]["scores"], **ROUNDING)
    assert scores_metadata(str(tmp_path / "whole.parquet"))["pool"] == 2
    assert one["scores"]["proxy"].std() > 0 and abs(one["scores"]["proxy"].mean()) < 1e-6

    # shards that overlap are refused
    with pytest.raises(ValueError, match="overlap"):
        merge_pool([str(d / "pool0.parquet"), str(d / "pool0.parquet")], str(tmp_path / "x.parquet"))


def test_the_smoke_study_in_shards_of_any_size_gives_the_same_curves(smoke_config, tmp_path):
    """The smoke study's best-of-n and PPO curves from pools in shards of 3 prompts (two shards of
    its 4) and of 4 (one shard), through Snakemake."""
    curves = []
    for size in (3, 4):
        cfg = copy.deepcopy(smoke_config)
        cfg.update(policies=["p"], reward_models=["r1", "r2"], data_sizes=[128], kl_penalties=[0.0])
        cfg.pop("subgrids")
        cfg["bon"]["shard_prompts"] = size
        wd = tmp_path / f"shards{size}"
        wd.mkdir()
        write_config(wd, cfg)
        r = snakemake_cmd(wd, "--cores", "2", "results/fits/rl.csv",
                          *(f"results/bon/p/{rm}/n128/s0.csv" for rm in ("r1", "r2")))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        shards = sorted(f.name for f in (wd / "results/pool/p").glob("shard*.parquet") if ".gold" not in f.name)
        assert shards == [f"shard{k}.parquet" for k in range(-(-4 // size))]
        curves.append({f.relative_to(wd / "results"): pd.read_csv(f)
                       for sub in ("bon", "rl") for f in sorted((wd / "results" / sub).rglob("*.csv"))})
    assert len(curves[0]) == 2 + 2 * 3 and curves[0].keys() == curves[1].keys()
    for f in curves[0]:
        pd.testing.assert_frame_equal(curves[1][f], curves[0][f], **ROUNDING, obj=str(f))


def test_the_gold_of_a_pool_in_parts_is_the_gold_of_one_job(tmp_path):
    """`bon.gold_parts`: the gold on an unsharded pool in jobs of consecutive prompts, merged, writes
    the file one job scoring the whole pool writes, byte for byte (a gold whose fluency comes from
    an LM, whose batches differ between a part and the whole pool)."""
    from overopt.config import gold_part_range
    from overopt.gold import build_gold
    from overopt.pool import make_pool, merge_gold, score_gold
    from overopt.text import corpus_split

    train, held = corpus_split()
    base, _ = tiny_base(tmp_path, seed=0)
    gold = str(tmp_path / "gold")
    build_gold({"tiny": {"terms": {"count": 1.0, "fluency": 0.5}, "reward_chars": ".,e"}},
               gold, str(base), held, 8, 8, seed=0, train_text=train)
    pool = str(tmp_path / "pool.parquet")
    make_pool(str(base), pool, prompts=5, samples=12, prompt_chars=8, completion_tokens=8, batch_size=16, seed=1, threads=1)
    score_gold(pool, gold, str(tmp_path / "whole.parquet"), threads=1)
    cfg = {"bon": {"prompts": 5, "gold_parts": 3}}
    assert [gold_part_range(cfg, k) for k in range(3)] == [(0, 1), (1, 3), (3, 5)]
    parts = [str(tmp_path / f"part{k}.parquet") for k in range(3)]
    for k, out in enumerate(parts):
        score_gold(pool, gold, out, threads=1, raw=True, prompts=gold_part_range(cfg, k))
        assert set(pd.read_parquet(out)["prompt_id"]) == set(range(*gold_part_range(cfg, k)))
    merge_gold(parts[::-1], str(tmp_path / "merged.parquet"))
    assert (tmp_path / "merged.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    with pytest.raises(ValueError, match="no samples of prompts 5..6"):
        score_gold(pool, gold, str(tmp_path / "none.parquet"), threads=1, raw=True, prompts=(5, 7))
