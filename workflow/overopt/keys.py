"""Grid keys travel inside the files they describe, never in their paths.

A proxy records its keys in its metrics.json; the scores file copies them into its metadata,
the best-of-n curve and the PPO run into columns. Readers take a file's keys from the file:
the directory layout under results/ is Snakemake's business alone.
"""

from __future__ import annotations

import json
from pathlib import Path

META = b"overopt"  # the parquet metadata key under which overopt's scores and pairs files record theirs
CELL = ("policy", "rm", "data", "seed")  # a proxy: one (policy, RM size, data size, seed)
RUN = ("policy", "rm", "data", "kl_penalty", "seed")  # a PPO run: a proxy's cell x its KL penalty


def proxy_keys(policy: str, rm: str, data: int, seed: int) -> dict:
    return {"policy": str(policy), "rm": str(rm), "data": int(data), "seed": int(seed)}


def key_tuple(keys, cols=CELL) -> tuple:
    return tuple(keys[c] for c in cols)


def read_proxy_metrics(path: str | Path) -> dict:
    """A proxy's metrics.json (the file, or the proxy's directory), checked for its keys."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    m = json.loads(path.read_text())
    if not isinstance(m.get("keys"), dict) or set(CELL) - set(m["keys"]):
        raise ValueError(f"{path}: no grid keys {CELL} in it (a proxy trained by an older overopt): "
                         "retrain it, e.g. `snakemake -R train_rm`")
    return m


def with_keys(df, keys: dict):
    """`df` with one constant column per key, in front."""
    df = df.copy()
    for i, (k, v) in enumerate(keys.items()):
        df.insert(i, k, v)
    return df


def _metadata(path: str | Path, kind: str, writer: str) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if META not in meta:
        raise ValueError(f"{path}: not a {kind} written by `{writer}` (no overopt metadata)")
    return json.loads(meta[META])


def write_table(res, out: str, meta: dict) -> None:
    """`res` as parquet, written atomically, with `meta` under `META` (read back by `scores_metadata`
    and `pairs_metadata`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .util import atomic_file

    table = pa.Table.from_pandas(res, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META: json.dumps(meta).encode()})
    with atomic_file(out) as tmp:
        pq.write_table(table, tmp)


def scores_metadata(path: str | Path) -> dict:
    """The overopt metadata of a scores file: the proxy's keys and its pi_init offset."""
    out = _metadata(path, "scores file", "overopt score-proxy")
    if set(CELL) - set(out.get("keys", {})):
        raise ValueError(f"{path}: no grid keys {CELL} in its metadata (written by an older overopt): rescore it")
    return out


def pairs_metadata(path: str | Path) -> dict:
    """The overopt metadata of a pairs file (`overopt pairs`): its split (`train_pairs` training
    pairs first, then `val_pairs` for validation, in pair_id order) and the label draw's generator."""
    return _metadata(path, "pairs file", "overopt pairs")


def labels_metadata(path: str | Path) -> dict:
    """The overopt metadata of a part of a labelled set (`overopt comparisons --rows`): its set's
    split, label noise and the generator state its pairs file was saved with."""
    return _metadata(path, "part of a labelled set", "overopt comparisons --rows")


def read_comparisons(files: list[str]):
    """The labelled pairs a proxy learns from: one labelled set, or the parts of one up to its data
    size (`config.label_parts`), in pair-id order; refused where training pairs are missing before
    the last one given, which would hand a proxy other pairs than its data size names."""
    import numpy as np
    import pandas as pd

    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values("pair_id", ignore_index=True)
    train = df.loc[df["split"] == "train", "pair_id"].to_numpy()
    if not np.array_equal(train, np.arange(len(train))):
        raise ValueError(f"{files[0]}: the training pairs of {files} are not the first {len(train)} of their set")
    return df


def require_columns(df, cols, source) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: no key column(s) {missing} (written by an older overopt): rerun the step that wrote it")


def load_curves(paths: list[str]):
    """Best-of-n curves, PPO runs or their per-prompt evaluations, one table, each row with its
    file's keys (columns written by `overopt bon-curve` and `overopt ppo`)."""
    import pandas as pd

    frames = []
    for p in paths:
        df = pd.read_csv(p)
        require_columns(df, CELL, p)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    dup = out.drop_duplicates([c for c in RUN + ("n", "step", "prompt") if c in out])
    if len(dup) < len(out):
        raise ValueError(f"two of the {len(paths)} curve files carry the same keys: {paths[:3]} ...")
    return out


def with_params(curves, fits):
    """`curves` with the proxy's parameter count (`rm_params`) from the fit table."""
    return curves.merge(fits[list(CELL) + ["rm_params"]].drop_duplicates(), on=list(CELL))


def main_policy(table) -> str:
    """The policy with the most (RM, data size) cells: where the RM-size and data sweeps live."""
    return table.groupby("policy")[["rm", "data"]].apply(lambda g: len(g.drop_duplicates())).idxmax()
