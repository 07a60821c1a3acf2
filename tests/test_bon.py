import itertools

import numpy as np
import pytest

from overopt.estimator import bon_curve, bon_kl, bon_per_prompt, bon_weights, n_grid


def brute_force(proxy, gold, n):
    """Exact expectation over every n-subset; ties broken uniformly at random."""
    N = len(proxy)
    vals = []
    for sub in itertools.combinations(range(N), n):
        best = max(proxy[i] for i in sub)
        tied = [i for i in sub if proxy[i] == best]
        vals.append(np.mean([gold[i] for i in tied]))
    return np.mean(vals)


@pytest.mark.parametrize("seed", range(3))
def test_estimator_equals_enumeration_over_subsets(seed):
    rng = np.random.default_rng(seed)
    N = 8
    proxy = rng.integers(0, 4, size=(3, N)).astype(float)  # many ties on purpose
    proxy[0] = rng.normal(size=N)  # and one prompt without ties
    gold = rng.normal(size=(3, N))
    ns = np.arange(1, N + 1)
    g, p = bon_per_prompt(proxy, gold, ns)
    for k in range(3):
        for j, n in enumerate(ns):
            assert g[k, j] == pytest.approx(brute_force(proxy[k], gold[k], n), abs=1e-10)
            assert p[k, j] == pytest.approx(brute_force(proxy[k], proxy[k], n), abs=1e-10)


def test_weights_are_a_distribution_and_stable_for_large_N():
    W = bon_weights(4096, [1, 2, 100, 4096])
    assert np.allclose(W.sum(1), 1.0)
    assert np.all(np.isfinite(W)) and np.all(W >= 0)
    assert W[-1, -1] == pytest.approx(1.0) and W[0, 0] == pytest.approx(1 / 4096)


def test_estimator_matches_monte_carlo_draws():
    rng = np.random.default_rng(0)
    P, N, n = 40, 256, 16
    proxy = rng.normal(size=(P, N))
    gold = proxy + rng.normal(size=(P, N))
    est = bon_curve(proxy, gold, ns=[n])
    draws = []
    for _ in range(400):
        for k in range(P):
            sub = rng.choice(N, n, replace=False)
            draws.append(gold[k, sub[np.argmax(proxy[k, sub])]])
    draws = np.array(draws)
    mc, mc_se = draws.mean(), draws.std() / np.sqrt(len(draws))
    assert abs(est["gold"].iloc[0] - mc) < 4 * mc_se


def test_kl_formula_and_grid():
    assert bon_kl(1) == 0
    assert bon_kl(1000) == pytest.approx(5.909, abs=1e-3)
    assert bon_kl(60000) == pytest.approx(10.0, abs=0.01)
    g = n_grid(4096)
    assert g[0] == 1 and g[-1] == 4096 and np.all(np.diff(g) > 0)
    c = bon_curve(np.random.default_rng(0).normal(size=(5, 64)), np.zeros((5, 64)))
    assert np.allclose(c["d"], np.sqrt(np.log(c["n"]) - (c["n"] - 1) / c["n"]))
    assert np.all(np.diff(c["proxy"]) > 0)  # best-of-n proxy rises with n
