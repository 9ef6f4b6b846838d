"""Determinism: the same key gives bit-identical results run to run on the same device.

Each computation is done twice and the results must be equal bit for bit (``assert_array_equal``,
no tolerance): the random bits come from the key alone and XLA's code is deterministic for a fixed
program and device. For ``sc.run`` the caches are cleared in between (``jax.clear_caches()``), so
that the second run also recompiles; ``sc.sweep`` compiles anew at every call. A different key must give a different result, so that the equality is not
the trivial one of a function that ignores its key.

Sharded against unsharded sweeps (equal to rtol 1e-6, not bitwise, because XLA compiles a
different program per per-device batch shape) are checked in
``tests/test_sweep.py::test_sharded_over_four_host_devices_matches_single_device``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import data, models, rewards

RING, _ = data.gaussian_ring(jax.random.key(5), 256)


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _differs(a, b) -> bool:
    return any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _twice(fn, key, *, recompile=False):
    first = fn(key)
    if recompile:
        jax.clear_caches()
    return first, fn(key)


# ------------------------------------------------------------------------------------------------
# Model fits

FAMILIES = {
    "categorical": (models.categorical(5), jnp.arange(40, dtype=jnp.int32) % 5),
    "gaussian": (models.gaussian(2), RING),
    "gmm": (models.gmm(4, 2, em_steps=5), RING),
    "kde": (models.kde(2), RING),
    "flow_matching": (models.flow_matching(2, width=16, depth=1, batch_size=32, init_steps=20,
                                           steps=10, num_sample_steps=4), RING),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_init_fit_and_sample_are_deterministic(name):
    model, x = FAMILIES[name]
    weights = jnp.linspace(0.5, 1.5, x.shape[0])

    def fit_and_sample(key):
        k_init, k_fit, k_sample = jax.random.split(key, 3)
        params = model.fit(k_fit, model.init(k_init, x, weights), x, weights)
        return params, model.sample(k_sample, params, 64)

    fit_and_sample = jax.jit(fit_and_sample)
    first, second = _twice(fit_and_sample, jax.random.key(11))
    _assert_trees_equal(first, second)
    # The samples depend on the key (for every family; the fits of the closed-form families and
    # of the GMM's EM do not).
    assert _differs(first[1], fit_and_sample(jax.random.key(12))[1])


# ------------------------------------------------------------------------------------------------
# The loop and the sweep

REWARD = rewards.distance(jnp.array([1.0, 0.0]))
CONFIG = sc.LoopConfig(num_generations=3, num_samples=64, k=3)


GMM = models.gmm(4, 2, em_steps=3)
GMM_PARAMS = models.GMMParams(weights=jnp.full(4, 0.25), means=data.ring_centers(4),
                              covs=jnp.stack([0.1 * jnp.eye(2)] * 4))
GAUSSIAN = models.gaussian(2)
GAUSSIAN_PARAMS = models.GaussianParams(mean=jnp.zeros(2), cov=jnp.eye(2))


def _loop(key, beta=1.0, real_fraction=0.2, *, model=GMM, params0=GMM_PARAMS):
    return sc.run(key, params0, RING, sc.Hyperparams(beta=beta, real_fraction=real_fraction),
                  model=model, reward_fn=REWARD, config=CONFIG)


def test_run_is_deterministic():
    run = jax.jit(_loop)
    first, second = _twice(run, jax.random.key(21), recompile=True)
    _assert_trees_equal(first, second)
    assert bool(np.all(first[1]["fit_is_finite"]))
    assert _differs(first[1]["reward_mean"], run(jax.random.key(22))[1]["reward_mean"])


def test_sweep_is_deterministic():
    def fn(key, beta, real_fraction):
        _, history = _loop(key, beta, real_fraction, model=GAUSSIAN, params0=GAUSSIAN_PARAMS)
        return {"reward": history["reward_mean"], "finite": history["fit_is_finite"]}

    grid = {"beta": [0.0, 2.0], "real_fraction": [0.0, 0.5]}
    first, second = _twice(lambda key: sc.sweep(key, fn, num_seeds=2, grid=grid),
                           jax.random.key(31))
    _assert_trees_equal(first.values, second.values)
    assert first.axes == second.axes
    for name in first.axes:
        np.testing.assert_array_equal(first.coords[name], second.coords[name])
    # Seeds differ from one another (distinct keys per seed).
    assert _differs(first.values["reward"][0], first.values["reward"][1])
