"""The best-of-n pool: P held-out prompts x N pi_init samples, scored once by the gold and once
per proxy (the scores tables the estimator reads)."""

from __future__ import annotations

import numpy as np


def make_pool(policy_dir: str, out: str, prompts: int, samples: int, prompt_chars: int,
              completion_tokens: int, batch_size: int, seed: int, threads: int, prompt_file: str | None = None,
              replicate: int = 0) -> None:
    """P held-out prompts x N completions from pi_init: one pool serves every proxy and every n <= N.
    Replicate r draws with seed + r, and from a prompts file takes the r-th block of P held-out
    prompts, so replicates' pools share no prompt."""
    import pandas as pd

    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import heldout_prompts
    from .util import atomic_file, log, seed_everything

    seed = seed + replicate
    seed_everything(seed, threads)
    ps = heldout_prompts(prompt_file, prompts, prompt_chars, np.random.default_rng(seed), offset=replicate * prompts)
    tok = load_tokenizer(policy_dir)
    model = load_causal(policy_dir)
    flat = [p for p in ps for _ in range(samples)]
    comps = sample_texts(model, tok, flat, completion_tokens, batch_size, seed)
    df = pd.DataFrame({
        "prompt_id": np.repeat(np.arange(prompts), samples),
        "sample_id": np.tile(np.arange(samples), prompts),
        "prompt": flat,
        "completion": comps,
        "replicate": replicate,  # which pool this is, for the findings' bootstrap (prompts nested in replicates)
    })
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("pool: %d prompts x %d samples", prompts, samples)


def score_gold(pool: str, gold_dir: str, out: str, threads: int) -> None:
    """Gold on every pool sample, standardised to mean 0 and std 1 over the pool (pi_init)."""
    import pandas as pd

    from .gold import load_gold
    from .util import atomic_file, seed_everything

    seed_everything(0, threads)
    df = pd.read_parquet(pool)
    g = load_gold(gold_dir).score(df["prompt"].tolist(), df["completion"].tolist())
    res = df[["prompt_id", "sample_id"]].assign(gold_raw=g, gold=(g - g.mean()) / g.std())
    with atomic_file(out) as tmp:
        res.to_parquet(tmp, index=False)


def score_proxy(pool: str, gold_scores: str, rm_dir: str, out: str, threads: int, dtype: str = "auto",
                loglik: str | None = None) -> None:
    """Proxy on every pool sample, re-centred so the pool (pi_init) mean is 0, beside gold.
    `loglik`: the proxy's base's log-likelihoods of the pool (`loglik.pool_table`), for its
    readout; without it they are computed here, to the same numbers."""
    import pandas as pd

    from .keys import CELL, read_proxy_metrics
    from .loglik import pool_logliks
    from .rm import load_proxy, loglik_readout, rewards_by_prompt
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
    prompts, comps = df["prompt"].tolist(), df["completion"].tolist()
    r = rewards_by_prompt(model, tok, prompts, comps, dtype=dt)
    if lm is not None:
        r = r + (readout(pool_logliks(loglik, df)) if loglik else loglik_readout(lm, readout, tok, prompts, comps))
    gold = pd.read_parquet(gold_scores)
    res = df[["prompt_id", "sample_id"]].assign(proxy=r - r.mean()).merge(gold[["prompt_id", "sample_id", "gold"]])
    write_scores(res, out, proxy_offset=float(r.mean()), keys={k: keys[k] for k in CELL}, pool=pool_replicate)


def write_scores(res, out: str, proxy_offset: float, keys: dict, pool: int = 0) -> None:
    """The scores table, with the proxy's keys, the replicate of the pool it scored and its raw
    pi_init mean kept as file metadata (RL re-centres its proxy scores on exactly that origin)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .util import atomic_file

    table = pa.Table.from_pandas(res, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"overopt": json.dumps({"proxy_offset": proxy_offset, "keys": keys, "pool": pool}).encode()})
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)


def proxy_offset(scores: str) -> float:
    from .keys import scores_metadata

    return scores_metadata(scores)["proxy_offset"]


