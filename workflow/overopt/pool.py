"""The best-of-n pool: P held-out prompts x N pi_init samples, scored once by the gold and once
per proxy (the scores tables the estimator reads).

Sharded (`bon.shard_prompts`), the pool is sampled and scored in prompt ranges, each a job of its
own, and merged by `merge_*`. A sharded pool draws each prompt's samples from that prompt's own
seed, so the pool does not depend on the shard size; an unsharded pool draws every sample from one
stream. Scores are per sample, and the pool-wide statistics (the gold's standardisation, the
proxy's pi_init mean) are taken after the merge: sharded scores equal the unsharded ones of the
same pool (`tests/test_shards.py`)."""

from __future__ import annotations

import numpy as np


def make_pool(policy_dir: str, out: str, prompts: int, samples: int, prompt_chars: int,
              completion_tokens: int, batch_size: int, seed: int, threads: int, prompt_file: str | None = None,
              replicate: int = 0, shard: tuple[int, int] | None = None) -> None:
    """P held-out prompts x N completions from pi_init: one pool serves every proxy and every n <= N.
    Replicate r draws with seed + r, and from a prompts file takes the r-th block of P held-out
    prompts, so replicates' pools share no prompt. `shard` (lo, hi): only prompts lo..hi-1, each
    sampled from its own seed (`prompt_seed`)."""
    import pandas as pd

    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import heldout_prompts
    from .templates import render_prompts, template_of
    from .util import atomic_file, log, seed_everything

    seed = seed + replicate
    seed_everything(seed, threads)
    ps = heldout_prompts(prompt_file, prompts, prompt_chars, np.random.default_rng(seed), offset=replicate * prompts)
    tok = load_tokenizer(policy_dir)
    model = load_causal(policy_dir)
    asked = render_prompts(tok, template_of(policy_dir), ps)  # what the policy is prompted with
    if shard is None:
        ids = np.arange(prompts)
        flat = [p for p in ps for _ in range(samples)]
        comps = sample_texts(model, tok, [a for a in asked for _ in range(samples)], completion_tokens, batch_size, seed)
    else:
        ids = np.arange(shard[0], min(shard[1], prompts))
        flat = [ps[j] for j in ids for _ in range(samples)]
        comps = [c for j in ids for c in sample_texts(model, tok, [asked[j]] * samples, completion_tokens, batch_size,
                                                      prompt_seed(seed, j))]
    df = pd.DataFrame({
        "prompt_id": np.repeat(ids, samples),
        "sample_id": np.tile(np.arange(samples), len(ids)),
        "prompt": flat,
        "completion": comps,
        "replicate": replicate,  # which pool this is, for the findings' bootstrap (prompts nested in replicates)
    })
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("pool: %d prompts x %d samples", len(ids), samples)


def prompt_seed(seed: int, prompt: int) -> int:
    """The sampling seed of one prompt of a sharded pool: its own stream, whatever the shard size."""
    return int(np.random.SeedSequence([seed, prompt]).generate_state(1)[0])


def score_gold(pool: str, gold_dir: str, out: str, threads: int, raw: bool = False,
               prompts: tuple[int, int] | None = None) -> None:
    """Gold on every pool sample, standardised to mean 0 and std 1 over the pool (pi_init).
    `raw`: a shard's scores, standardised once merged (`merge_gold`). `prompts` (lo, hi): only the
    samples of prompts lo..hi-1 (a part, `bon.gold_parts`), each scored as in the whole pool."""
    import pandas as pd

    from .gold import load_gold
    from .util import atomic_file, seed_everything

    seed_everything(0, threads)
    df = pd.read_parquet(pool)
    if prompts is not None:
        df = df[(df["prompt_id"] >= prompts[0]) & (df["prompt_id"] < prompts[1])]
        if df.empty:
            raise ValueError(f"{pool}: no samples of prompts {prompts[0]}..{prompts[1] - 1}")
    g = load_gold(gold_dir).score(df["prompt"].tolist(), df["completion"].tolist())
    res = df[["prompt_id", "sample_id"]].assign(gold_raw=g)
    with atomic_file(out) as tmp:
        (res if raw else standardised(res)).to_parquet(tmp, index=False)


def standardised(res):
    g = res["gold_raw"].to_numpy()
    return res.assign(gold=(g - g.mean()) / g.std())


def score_proxy(pool: str, gold_scores: str | None, rm_dir: str, out: str, threads: int, dtype: str = "auto",
                loglik: str | None = None) -> None:
    """Proxy on every pool sample, re-centred so the pool (pi_init) mean is 0, beside gold.
    `loglik`: the proxy's base's log-likelihoods of the pool (`loglik.pool_table`), for its
    readout; without it they are computed here, to the same numbers. Without `gold_scores`: a
    shard's raw scores, re-centred and joined to the gold once merged (`merge_scores`)."""
    import pandas as pd

    from .keys import CELL, read_proxy_metrics, write_table
    from .loglik import pool_logliks
    from .rm import load_proxy, loglik_readout, rewards_by_prompt
    from .templates import proxy_template, render_frame
    from .util import log, native_bf16, resolve_dtype, seed_everything

    seed_everything(0, threads)
    keys = read_proxy_metrics(rm_dir)["keys"]
    df = pd.read_parquet(pool)
    pool_replicate = int(df["replicate"].iloc[0]) if "replicate" in df else 0
    model, tok, lm, readout = load_proxy(rm_dir)
    dt = resolve_dtype(dtype)
    log.info("proxy scoring precision: %s (asked: %s)", dt, dtype)
    if dtype == "bfloat16" and not native_bf16():
        log.warning("bon.score_dtype: bfloat16 on a device without bf16 units: emulated, several times "
                    "slower than float32 (the 357k proxy: 853 s against 89 s, measured); `auto` avoids it")
    read = render_frame(tok, proxy_template(rm_dir), df)  # the pool as the proxy reads it
    prompts, comps = read["prompt"].tolist(), read["completion"].tolist()
    r = rewards_by_prompt(model, tok, prompts, comps, dtype=dt)
    if lm is not None:
        r = r + (readout(pool_logliks(loglik, df)) if loglik else loglik_readout(lm, readout, tok, prompts, comps))
    res = df[["prompt_id", "sample_id"]].assign(proxy_raw=r)
    meta = {"keys": {k: keys[k] for k in CELL}, "pool": pool_replicate}
    if gold_scores is None:
        write_table(res, out, meta)
    else:
        write_scores(centred(res, pd.read_parquet(gold_scores)), out, **meta)


def centred(res, gold):
    """Raw proxy scores re-centred on their pool mean, beside the gold: (table, pi_init mean)."""
    r = res["proxy_raw"].to_numpy()
    return res[["prompt_id", "sample_id"]].assign(proxy=r - r.mean()).merge(gold[["prompt_id", "sample_id", "gold"]]), float(r.mean())


def merge_pool(shards: list[str], out: str) -> None:
    """A pool, or any per-sample table with no pool-wide statistic, from its shards: concatenated."""
    _write(_concat(shards), out)


def merge_gold(shards: list[str], out: str) -> None:
    _write(standardised(_concat(shards)), out)


def merge_scores(shards: list[str], gold_scores: str, out: str) -> None:
    import pandas as pd

    from .keys import scores_metadata

    metas = [scores_metadata(f) for f in shards]
    if any(m != metas[0] for m in metas):
        raise ValueError(f"{shards[0]}: shards of different proxies or pools: {metas[0]} and {next(m for m in metas if m != metas[0])}")
    write_scores(centred(_concat(shards), pd.read_parquet(gold_scores)), out, **metas[0])


def _concat(shards: list[str]):
    """Shards in prompt order, refused where two hold the same sample."""
    import pandas as pd

    df = pd.concat([pd.read_parquet(f) for f in shards], ignore_index=True)
    df = df.sort_values(["prompt_id", "sample_id"], kind="stable", ignore_index=True)
    if df.duplicated(["prompt_id", "sample_id"]).any():
        raise ValueError(f"{shards[0]}: shards overlap (a sample appears twice)")
    return df


def _write(df, out: str) -> None:
    from .util import atomic_file

    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)


def write_scores(scored, out: str, keys: dict, pool: int = 0) -> None:
    """The scores table, with the proxy's keys, the replicate of the pool it scored and its raw
    pi_init mean kept as file metadata (RL re-centres its proxy scores on exactly that origin).
    `scored`: (table, pi_init mean), as `centred` returns them."""
    res, offset = scored
    from .keys import write_table

    write_table(res, out, {"proxy_offset": offset, "keys": keys, "pool": pool})


def proxy_offset(scores: str) -> float:
    from .keys import scores_metadata

    return scores_metadata(scores)["proxy_offset"]


