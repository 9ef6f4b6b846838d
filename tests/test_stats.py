"""Tests for selfconsume.stats: the mean over seeds and its Student-t interval, against SciPy and
without it."""

import sys

import numpy as np
import pytest

from selfconsume import stats as sc_stats



@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("num", [2, 3, 10])
def test_mean_and_interval_matches_scipy_t(level, num):
    # Reference: scipy.stats.t.ppf((1 + level) / 2, num - 1) * sd(ddof=1) / sqrt(num); the same
    # formula in float64, so the tolerance is rounding only.
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(2).normal(size=(5, num, 7))
    mean, low, high = sc_stats.mean_and_interval(x, axis=1, level=level)
    half = stats.t.ppf(0.5 + level / 2, num - 1) * x.std(axis=1, ddof=1) / np.sqrt(num)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(low, x.mean(axis=1) - half, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(high, x.mean(axis=1) + half, rtol=1e-12, atol=1e-14)
    assert mean.shape == (5, 7)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 9, 29, 30, 100, 999, 1000, 1001, 5000, 10**6])
def test_builtin_t_quantile_matches_scipy(df):
    # The SciPy-free quantile: exact series + bisection for df <= 1000 (rounding only), the
    # three-term Cornish-Fisher expansion above (error O(df^-4) < 1e-12 relative there).
    stats = pytest.importorskip("scipy.stats")
    for level in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        assert sc_stats._t_quantile_builtin(level, df) == pytest.approx(
            stats.t.ppf(0.5 + level / 2, df), rel=1e-10)


def test_mean_and_interval_without_scipy(monkeypatch):
    x = np.random.default_rng(3).normal(size=(6, 4))
    expected = sc_stats.mean_and_interval(x, level=0.9)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `import scipy.stats` now fails
    with pytest.raises(ImportError):
        import scipy.stats  # noqa: F401
    got = sc_stats.mean_and_interval(x, level=0.9)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_mean_and_interval_one_sample_and_nan():
    mean, low, high = sc_stats.mean_and_interval(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(mean, [1.0, 2.0])
    np.testing.assert_array_equal(low, mean)
    np.testing.assert_array_equal(high, mean)
    mean, low, high = sc_stats.mean_and_interval(np.array([[1.0, np.nan], [2.0, 3.0]]))
    assert np.isnan(mean[1]) and np.isnan(low[1]) and np.isnan(high[1])
    assert low[0] < mean[0] == 1.5 < high[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"values": np.ones((2, 3)), "axis": 2}, "`axis`"),
    ({"values": np.ones((2, 3)), "axis": 1.0}, "`axis`"),
    ({"values": np.ones((2, 3)), "level": 1.0}, "`level`.*got 1.0"),
    ({"values": np.ones((2, 3)), "level": 0}, "`level`"),
    ({"values": np.ones((0, 3))}, "`values`.*at least one entry"),
    ({"values": 3.0}, "`values`.*0-d"),
    ({"values": np.array(["a", "b"])}, "`values`.*numbers"),
])
def test_mean_and_interval_rejects(kwargs, match):
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=match):
        sc_stats.mean_and_interval(values, **kwargs)
