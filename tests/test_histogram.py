"""The histogram model against np.histogramdd, its sampling law, and its exact population dynamics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import models


def _reference_probs(x, w, bins, low, high):
    """Weighted cell shares with NumPy: points clipped into the box, then np.histogramdd."""
    x = np.clip(np.asarray(x, np.float64), low, np.nextafter(high, low))
    dim = x.shape[1]
    counts, _ = np.histogramdd(x, bins=[np.linspace(low, high, bins + 1)] * dim,
                               weights=np.asarray(w, np.float64))
    return (counts / counts.sum()).reshape(-1)  # row-major over the axes, like the model


@pytest.mark.parametrize("dim,bins", [(1, 7), (2, 5), (3, 4)])
def test_fit_matches_histogramdd(dim, bins):
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(500, dim)) * 1.2  # some points fall outside [-1.5, 1.5)
    w = rng.uniform(size=500)
    model = models.histogram(bins, -1.5, 1.5, dim)
    p = model.init(jax.random.key(0), jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(p.probs, _reference_probs(x, w, bins, -1.5, 1.5), atol=2e-6)
    # float32 sums of 500 weights in [0, 1]: relative rounding ~1e-7 per term


def test_centers_log_prob_and_sampling():
    model = models.histogram(4, 0.0, 2.0, 2)
    centers = np.asarray(models.histogram_centers(4, 0.0, 2.0, 2))
    assert centers.shape == (16, 2)
    np.testing.assert_allclose(centers[:5], [[0.25, 0.25], [0.25, 0.75], [0.25, 1.25],
                                             [0.25, 1.75], [0.75, 0.25]])
    probs = np.arange(16, dtype=np.float64)
    probs /= probs.sum()
    params = models.HistogramParams(probs=jnp.asarray(probs, jnp.float32))
    # log-density: log p_j - d log h with h = 0.5; -inf outside the box
    lp = model.log_prob(params, jnp.asarray([[0.1, 0.6], [1.9, 1.9], [2.1, 0.0]]))
    np.testing.assert_allclose(lp[:2], np.log(probs[[1, 15]]) - 2 * np.log(0.5), rtol=1e-6)
    assert lp[2] == -np.inf
    # samples are cell centres with frequencies p (chi-square, 15 dof, 0.1% level: 37.7)
    n = 200_000
    x = np.asarray(model.sample(jax.random.key(1), params, n))
    index = {tuple(c): j for j, c in enumerate(centers)}
    counts = np.bincount([index[tuple(r)] for r in x[:20000]], minlength=16) * (n / 20000)
    expected = probs * n
    mask = expected > 0
    chi2 = np.sum((counts[mask] - expected[mask]) ** 2 / expected[mask]) / (n / 20000)
    assert chi2 < 37.7, chi2
    assert counts[0] == 0  # a cell of probability zero is never drawn
    # refitting on its own samples recovers p (law of large numbers: 3 standard errors)
    refit = model.fit(jax.random.key(2), params, jnp.asarray(x))
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(np.asarray(refit.probs) - probs) <= 3.5 * se + 1e-7)


def test_loop_follows_exact_population_dynamics():
    """The sample-based loop of the histogram model tracks theory.trajectory on the cell centres."""
    bins, n, t, k = 8, 4096, 6, 4
    model = models.histogram(bins, -1.5, 1.5, 2)
    real, centers = sc.data.gaussian_ring(jax.random.key(0), 4096)
    reward = sc.rewards.distance(centers[0], scale=2.0)
    params0 = model.init(jax.random.key(0), real)
    config = sc.LoopConfig(num_generations=t, num_samples=n, k=k)
    cells = models.histogram_centers(bins, -1.5, 1.5, 2)

    def one(key):
        return sc.run(key, params0, real, sc.Hyperparams(beta=1.0, real_fraction=0.25),
                      model=model, reward_fn=reward, config=config)[1]["reward_mean"]

    curves = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), 16)))
    traj = sc.theory.trajectory(params0.probs, reward(cells), k=k, num_generations=t, beta=1.0,
                                p_data=params0.probs, real_fraction=0.25)
    exact = np.asarray(traj @ reward(cells))
    mean, se = curves.mean(0), curves.std(0, ddof=1) / np.sqrt(16)
    assert exact[-1] > exact[0] + 0.2  # the curve moves: the comparison is not vacuous
    # 16 seeds, 7 generations: within 4 standard errors (two-sided 1e-4 level per generation)
    assert np.all(np.abs(mean - exact) <= 4 * se), (mean, exact, se)


def test_validation():
    with pytest.raises(ValueError, match="`bins` must be"):
        models.histogram(0)
    with pytest.raises(ValueError, match="`low` must be below `high`; got low=1.0, high=1.0"):
        models.histogram(4, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"`data` must have shape \(N, dim\)"):
        models.histogram(4).init(jax.random.key(0), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="`data` must be finite"):
        models.histogram(4).init(jax.random.key(0), jnp.asarray([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="2\\*\\*24 cells"):
        models.histogram(5000, dim=2)
