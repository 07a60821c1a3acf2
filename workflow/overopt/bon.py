"""Best-of-n from one pool: the unbiased estimator (WebGPT App. I) and its analytic KL.

For each prompt, N samples sorted by proxy score ascending, S_1..S_N. The sample at rank i
is the proxy-best of a uniformly random n-subset with probability C(i-1, n-1) / C(N, n), so
E[score of best-of-n] = sum_i w_{n,i} score(S_i). Every n <= N comes out of the same pool.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def bon_kl(n) -> np.ndarray:
    """KL(best-of-n || pi_init) = log n - (n-1)/n (exact for distinct samples)."""
    n = np.asarray(n, dtype=float)
    return np.log(n) - (n - 1) / n


def bon_weights(N: int, ns) -> np.ndarray:
    """(len(ns), N) matrix of C(i-1, n-1)/C(N, n) for ranks i = 1..N, in log space."""
    ns = np.asarray(ns, dtype=float)[:, None]
    i = np.arange(1, N + 1, dtype=float)[None, :]
    valid = i >= ns
    k = np.where(valid, i - ns, 0.0)  # keep gammaln's arguments positive where w = 0
    logw = gammaln(i) - gammaln(ns) - gammaln(k + 1) - (gammaln(N + 1) - gammaln(ns + 1) - gammaln(N - ns + 1))
    return np.where(valid, np.exp(logw), 0.0)


def n_grid(N: int, points_per_doubling: int = 4) -> np.ndarray:
    """Log-spaced integers from 1 to N inclusive."""
    k = int(np.ceil(np.log2(N) * points_per_doubling)) + 1
    return np.unique(np.round(np.logspace(0, np.log2(N), k, base=2)).astype(int).clip(1, N))


def _tie_average(sorted_key: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace values by their mean within runs of equal keys (per row).

    Best-of-n breaks a tie at random, so the selected member of a tied group is uniform
    over the group: its expected score is the group mean.
    """
    P, N = sorted_key.shape
    new_group = np.ones((P, N), dtype=bool)
    new_group[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    gid = np.cumsum(new_group.ravel()) - 1
    sums = np.bincount(gid, weights=values.ravel())
    counts = np.bincount(gid)
    return (sums / counts)[gid].reshape(P, N)


def bon_per_prompt(proxy: np.ndarray, gold: np.ndarray, ns) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt best-of-n estimates, shape (P, len(ns)), for gold and for proxy."""
    proxy = np.asarray(proxy, dtype=float)
    gold = np.asarray(gold, dtype=float)
    P, N = proxy.shape
    order = np.argsort(proxy, axis=1, kind="stable")
    sp = np.take_along_axis(proxy, order, axis=1)
    sg = _tie_average(sp, np.take_along_axis(gold, order, axis=1))
    W = bon_weights(N, ns)
    return sg @ W.T, sp @ W.T


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns=None):
    """The estimator averaged over prompts, with standard errors over prompts, as a DataFrame."""
    import pandas as pd

    P, N = proxy.shape
    ns = n_grid(N) if ns is None else np.asarray(ns)
    g, p = bon_per_prompt(proxy, gold, ns)
    se = lambda x: x.std(axis=0, ddof=1) / np.sqrt(P) if P > 1 else np.zeros(x.shape[1])
    kl = bon_kl(ns)
    return pd.DataFrame(
        {"n": ns, "kl": kl, "d": np.sqrt(kl), "gold": g.mean(0), "gold_se": se(g), "proxy": p.mean(0), "proxy_se": se(p)}
    )


# --------------------------------------------------------------------------- pipeline steps


def make_pool(policy_dir: str, out: str, prompts: int, samples: int, prompt_chars: int,
              completion_tokens: int, batch_size: int, seed: int, threads: int, prompt_file: str | None = None) -> None:
    """P held-out prompts x N completions from pi_init: one pool serves every proxy and every n <= N."""
    import pandas as pd

    from .models import load_causal, load_tokenizer, sample_texts
    from .prompts import heldout_prompts
    from .util import atomic_file, log, seed_everything

    seed_everything(seed, threads)
    ps = heldout_prompts(prompt_file, prompts, prompt_chars, np.random.default_rng(seed))
    tok = load_tokenizer(policy_dir)
    model = load_causal(policy_dir)
    flat = [p for p in ps for _ in range(samples)]
    comps = sample_texts(model, tok, flat, completion_tokens, batch_size, seed)
    df = pd.DataFrame({
        "prompt_id": np.repeat(np.arange(prompts), samples),
        "sample_id": np.tile(np.arange(samples), prompts),
        "prompt": flat,
        "completion": comps,
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

    from .loglik import pool_logliks
    from .rm import load_proxy, loglik_readout, rewards_by_prompt
    from .util import log, native_bf16, resolve_dtype, seed_everything

    seed_everything(0, threads)
    df = pd.read_parquet(pool)
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
    write_scores(res, out, proxy_offset=float(r.mean()))


def write_scores(res, out: str, proxy_offset: float) -> None:
    """The scores table, with the proxy's raw pi_init mean kept as file metadata so that RL
    can re-centre its proxy scores on exactly the same origin."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .util import atomic_file

    table = pa.Table.from_pandas(res, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"overopt": json.dumps({"proxy_offset": proxy_offset}).encode()})
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)


def proxy_offset(scores: str) -> float:
    import json

    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(scores).metadata[b"overopt"])["proxy_offset"]


def scores_matrix(df) -> tuple[np.ndarray, np.ndarray]:
    df = df.sort_values(["prompt_id", "sample_id"])
    P = df["prompt_id"].nunique()
    return df["proxy"].to_numpy().reshape(P, -1), df["gold"].to_numpy().reshape(P, -1)


def write_curve(scores: str, out: str) -> None:
    import pandas as pd

    from .util import atomic_file

    proxy, gold = scores_matrix(pd.read_parquet(scores))
    curve = bon_curve(proxy, gold)
    with atomic_file(out) as tmp:
        curve.to_csv(tmp, index=False)
