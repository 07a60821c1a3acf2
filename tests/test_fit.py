import numpy as np
import pytest

from overopt.fit import fit_curve, peak, predict


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.6, 0.11), ("bon", 0.49, 0.12), ("rl", 0.5, 0.15)])
def test_fit_recovers_known_coefficients_from_noisy_curves(form, alpha, beta):
    rng = np.random.default_rng(0)
    d = np.linspace(0.2, 4.0, 40)
    r = predict(form, d, alpha, beta) + rng.normal(0, 0.01, d.size)
    f = fit_curve(form, d, r)
    assert f["alpha"] == pytest.approx(alpha, abs=0.02)
    assert f["beta"] == pytest.approx(beta, abs=0.02)
    assert f["r2"] > 0.95


def test_peaks():
    assert peak("bon", 0.6, 0.1)["d_peak"] == pytest.approx(3.0)
    assert peak("bon", 0.6, 0.1)["gold_peak"] == pytest.approx(0.6**2 / 0.4)
    assert peak("rl", 0.5, 0.25)["d_peak"] == pytest.approx(np.exp(1.0))
    assert np.isnan(peak("bon", 0.6, -0.1)["d_peak"])


def test_r2_is_low_for_the_wrong_shape():
    d = np.linspace(0.1, 3, 30)
    assert fit_curve("bon", d, np.sin(6 * d))["r2"] < 0.5
