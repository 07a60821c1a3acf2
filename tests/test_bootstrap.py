"""The cluster bootstrap recovers known standard errors on synthetic nested data, where dividing
a per-seed standard error by sqrt(seeds) does not."""

import numpy as np
import pytest

from overopt.bootstrap import cluster_bootstrap, interval, replicate_mean


def test_prompts_nested_in_replicates():
    """y = replicate effect (sd 0.5) + prompt effect (sd 1.0): the mean over R replicates of P
    prompts each has SE sqrt(0.25 / R + 1 / (R P))."""
    rng = np.random.default_rng(0)
    R, P = 30, 40
    data = [rng.normal(0, 0.5) + rng.normal(0, 1.0, (P, 1)) for _ in range(R)]
    truth = np.sqrt(0.25 / R + 1.0 / (R * P))
    se = cluster_bootstrap(replicate_mean, data, B=2000, seed=1).std()
    assert se == pytest.approx(truth, rel=0.2)
    # resampling prompts alone (every replicate kept) misses the replicate effect
    se_prompts_only = np.sqrt(np.mean([x.var(ddof=1) / P for x in data]) / R)
    assert se_prompts_only < 0.5 * truth


def test_prompts_shared_by_every_replicate():
    """Every replicate scores the same P prompts (a pool drawn once): y = prompt effect (sd 1.0,
    shared) + noise (sd 0.3). The mean's SE is about sqrt(1 / P + 0.09 / (R P)): the prompts do
    not average out over replicates. The shared-prompt bootstrap recovers it; the per-seed SE over
    prompts divided by sqrt(R) (what seed-mean curves used) is too small by about sqrt(R)."""
    rng = np.random.default_rng(2)
    R, P = 8, 60
    prompt = rng.normal(0, 1.0, (P, 1))
    data = [prompt + rng.normal(0, 0.3, (P, 1)) for _ in range(R)]
    truth = np.sqrt(1.0 / P + 0.09 / (R * P))
    se = cluster_bootstrap(replicate_mean, data, B=2000, seed=3, shared_prompts=True).std()
    assert se == pytest.approx(truth, rel=0.25)
    shortcut = np.sqrt(np.mean([x.std(ddof=1) ** 2 / P for x in data])) / np.sqrt(R)
    assert shortcut < 0.5 * truth
    # drawing prompts independently per replicate treats shared prompts as new ones: too narrow too
    assert cluster_bootstrap(replicate_mean, data, B=2000, seed=3).std() < 0.6 * truth


def test_interval_covers_and_is_ordered():
    draws = np.random.default_rng(4).normal(1.0, 0.1, (4000, 2))
    lo, hi = interval(draws)
    assert np.all(lo < 1.0) and np.all(hi > 1.0) and np.allclose(hi - lo, 2 * 1.96 * 0.1, rtol=0.1)
    with pytest.raises(ValueError):
        cluster_bootstrap(replicate_mean, [np.zeros((3, 1)), np.zeros((4, 1))], B=2, shared_prompts=True)
