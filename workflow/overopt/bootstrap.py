"""The cluster bootstrap of `docs/findings.md`: prompts nested in replicates.

A study's numbers vary with the replicate (what the comparison sample, the proxies' seeds, the
pool drew) and with the prompts each curve was measured on. A resample draws replicates with
replacement, then within each drawn replicate its prompts with replacement; where every
replicate was measured on the same prompts, one set of prompt indices is drawn and used in all of
them, because a prompt's difficulty is then shared by every replicate and does not average out
over them. Tables in, resampled statistics out: nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def resample(per_replicate: Sequence[np.ndarray], rng: np.random.Generator, shared_prompts: bool) -> list[np.ndarray]:
    """One cluster-bootstrap draw (a `Draw`): a list of R arrays, each (prompts, ...) of a drawn
    replicate with its prompts redrawn (the same prompt indices in all of them when `shared_prompts`)."""
    sizes = [x.shape[0] for x in per_replicate]
    if shared_prompts and len(set(sizes)) > 1:
        raise ValueError("shared prompts: every replicate must hold the same prompts")
    draw = Draw(rng.random(len(sizes)), rng.random((len(sizes), max(sizes))))
    return [per_replicate[r][draw.prompt_index(sizes[r], 0 if shared_prompts else j)]
            for j, r in enumerate(draw.rep_index(len(sizes)))]


def cluster_bootstrap(stat: Callable[[list[np.ndarray]], np.ndarray | float], per_replicate: Sequence[np.ndarray],
                      B: int = 1000, seed: int = 0, shared_prompts: bool = False) -> np.ndarray:
    """`stat` on B cluster-bootstrap draws of `per_replicate` (R arrays, prompts on axis 0),
    stacked on axis 0."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(stat(resample(per_replicate, rng, shared_prompts)), dtype=float) for _ in range(B)])


def interval(draws: np.ndarray, level: float = 0.95, inf: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of bootstrap draws (axis 0), NaN draws left out; with `inf`, an
    infinite draw counts as +-inf (a finite stand-in that ranks beyond every real value)."""
    v = np.asarray(draws, float)
    if inf is not None:
        v = np.where(np.isposinf(v), inf, np.where(np.isneginf(v), -inf, v))
    if not np.isfinite(v).any():
        return np.full(v.shape[1:], np.nan), np.full(v.shape[1:], np.nan)
    a = (1 - level) / 2
    lo, hi = np.nanpercentile(v, [100 * a, 100 * (1 - a)], axis=0)
    return lo, hi


def replicate_mean(per_replicate: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over replicates of each replicate's mean over its prompts (axis 0)."""
    return np.mean([x.mean(0) for x in per_replicate], axis=0)


@dataclass
class Draw:
    """The uniform numbers behind one resample of many cells at once (None: the data as measured).

    A cell of R replicates takes the first R of `reps` onto its own replicates, and a method's
    P prompts the first P of a row of `prompts` (R rows): row 0 where every replicate was measured
    on the same prompts, row j for the j-th drawn replicate where each has its own. Cells with the
    same replicates and prompts get the same draw, as correlated as their measurements are."""

    reps: np.ndarray | None
    prompts: np.ndarray | None  # (R, P)

    def rep_index(self, R: int) -> np.ndarray:
        return np.arange(R) if self.reps is None else np.floor(self.reps[:R] * R).astype(int)

    def prompt_index(self, P: int, row: int = 0) -> np.ndarray:
        return np.arange(P) if self.prompts is None else np.floor(self.prompts[row, :P] * P).astype(int)


def draws(B: int, seed: int, R: int, P: int) -> list[Draw]:
    rng = np.random.default_rng(seed)
    return [Draw(rng.random(R), rng.random((R, P))) for _ in range(B)]
