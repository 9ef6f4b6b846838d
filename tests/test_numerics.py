"""Numerics in float32 at the extremes: huge rewards and inverse temperatures, NaN rewards,
degenerate training data, and fits that turn non-finite.

* ``curate`` and ``choice_probabilities`` with rewards up to +-1e4 and ``beta`` up to 1e3 (and
  inf) give finite results, keep the best candidate when ``beta`` times the gap to the runner-up
  is huge, and never keep a NaN reward while the group has a finite one;
* ``sc.theory`` at the same scales gives finite laws that sum to one;
* all-identical training data leaves every model family finite (variance floors, re-seeded GMM
  components), in its params and its samples;
* a fit that still turns non-finite is reported as ``fit_is_finite = False`` in the info of
  ``sc.retrain_step`` and in the history of ``sc.run``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import models, theory

KEY = jax.random.key(0)
GROUPS, K = 500, 4
BETAS = [0.0, 1e-3, 1.0, 1e3, math.inf]


def _extreme_rewards(seed=1):
    """(GROUPS * K,) float32 rewards uniform in [-1e4, 1e4], with the two extremes included."""
    r = jax.random.uniform(jax.random.key(seed), (GROUPS * K,), jnp.float32, -1e4, 1e4)
    return r.at[0].set(-1e4).at[1].set(1e4)


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact))


# ------------------------------------------------------------------------------------------------
# Curation


@pytest.mark.parametrize("beta", BETAS)
def test_curate_and_choice_probabilities_are_finite_at_extreme_scales(beta):
    r = _extreme_rewards()
    kept = sc.curate(KEY, jnp.arange(GROUPS * K), r, k=K, beta=beta)
    assert kept.rewards.dtype == jnp.float32 and _all_finite(kept.rewards)
    assert np.all((np.asarray(kept.index) >= 0) & (np.asarray(kept.index) < K))
    probs = np.asarray(sc.choice_probabilities(r.reshape(GROUPS, K), beta=beta))
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)  # float32 sums of 4 terms


@pytest.mark.parametrize("beta", [1e3, math.inf])
def test_best_candidate_is_kept_when_beta_times_the_gap_is_huge(beta):
    r = _extreme_rewards(2)
    groups = np.asarray(r).reshape(GROUPS, K)
    top2 = np.sort(groups, axis=1)[:, -2:]
    # Where beta * (best - runner-up) > 50 the runner-up is kept with probability < 3 e^-50:
    # the kept candidate must be the argmax (with beta = 1e3 that is every gap above 0.05).
    sure = beta * (top2[:, 1] - top2[:, 0]) > 50
    assert sure.mean() > 0.99
    kept = sc.curate(KEY, jnp.arange(GROUPS * K), r, k=K, beta=beta)
    np.testing.assert_array_equal(np.asarray(kept.index)[sure], groups.argmax(axis=1)[sure])
    probs = np.asarray(sc.choice_probabilities(jnp.asarray(groups), beta=beta))
    np.testing.assert_array_equal(probs[sure], np.eye(K)[groups.argmax(axis=1)][sure])


@pytest.mark.parametrize("beta", BETAS)
def test_nan_rewards_are_never_kept_while_a_finite_one_exists(beta):
    r = np.array(_extreme_rewards(3))
    nan = np.array(jax.random.bernoulli(jax.random.key(4), 0.6, r.shape))
    nan[: 4 * K] = True  # the first four groups are all NaN
    r[nan] = np.nan
    has_finite = ~np.all(nan.reshape(GROUPS, K), axis=1)
    for seed in range(5):
        kept = sc.curate(jax.random.key(seed), jnp.arange(GROUPS * K), r, k=K, beta=beta)
        kept_nan = np.isnan(np.asarray(kept.rewards))
        assert not np.any(kept_nan & has_finite)
        assert np.all(kept_nan[~has_finite])  # an all-NaN group keeps a NaN (it stays visible)
    probs = np.asarray(sc.choice_probabilities(r.reshape(GROUPS, K), beta=beta))
    assert np.all(np.isfinite(probs))
    assert np.all(probs.reshape(-1)[nan & np.repeat(has_finite, K)] == 0)
    np.testing.assert_allclose(probs[~has_finite], 1.0 / K)  # uniform over an all-NaN group


# ------------------------------------------------------------------------------------------------
# Exact dynamics

P8 = jnp.full(8, 1.0 / 8, jnp.float32)
R8 = jnp.array([-1e4, 1e4, 0.0, 5e3, -5e3, 1e4 - 1.0, 3.0, -2.0], jnp.float32)


@pytest.mark.parametrize("k", [2, 3, 16, math.inf])
@pytest.mark.parametrize("beta", BETAS)
def test_theory_is_finite_at_extreme_scales_in_float32(k, beta):
    h = theory.curation_factor(P8, R8, k=k, beta=beta)
    assert h.dtype == jnp.float32 and _all_finite(h)
    q = theory.curated(P8, R8, k=k, beta=beta)
    assert _all_finite(q) and np.all(np.asarray(q) >= 0)
    np.testing.assert_allclose(float(jnp.sum(q)), 1.0, atol=1e-6)  # renormalised in float32
    mixed = theory.retrain_map(P8, R8, k=k, beta=beta, p_data=P8, real_fraction=0.3)
    assert _all_finite(mixed)
    np.testing.assert_allclose(float(jnp.sum(mixed)), 1.0, atol=1e-6)
    path = theory.trajectory(P8, R8, num_generations=4, k=k, beta=beta, p_data=P8,
                             real_fraction=0.3)
    assert _all_finite(path)
    np.testing.assert_allclose(np.asarray(path).sum(axis=1), 1.0, atol=1e-5)
    assert _all_finite(theory.fixed_point(P8, R8, k=k, beta=beta, real_fraction=0.3))
    assert _all_finite(theory.limit(P8, R8))


def test_theory_at_huge_beta_times_spread_is_the_best_of_k_law():
    # With beta * (smallest gap between reward levels) = 1e3 nats, K-way curation is best-of-K
    # up to e^-1000: the finite-beta law must equal the beta = inf law (float32 rounding, 1e-5).
    # The levels lie up to 2e7 nats apart, far beyond what a uniform grid of nodes could resolve:
    # this checks that the quadrature skips the gaps between the reward levels.
    r = jnp.array([-1e4, 1e4, 0.0, 5e3, -5e3, 1e4 - 1.0, 3.0, -2.0], jnp.float32)
    exact = theory.curated(P8, r, k=2, beta=jnp.inf)
    np.testing.assert_allclose(theory.curated(P8, r, k=2, beta=1e3), exact, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Degenerate training data

FAMILIES = {
    "categorical": models.categorical(5),
    "gaussian": models.gaussian(2),
    "gmm": models.gmm(4, 2, em_steps=5),
    "kde": models.kde(2),
    "flow_matching": models.flow_matching(2, width=16, depth=1, batch_size=32, init_steps=30,
                                          steps=10, num_sample_steps=4),
    "histogram": models.histogram(8, dim=2),
}


def _identical(name, n=64, value=0.3):
    if name == "categorical":
        return jnp.full((n,), 2, jnp.int32)
    return jnp.full((n, 2), value, jnp.float32)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_identical_training_data_leaves_every_model_finite(name):
    model, x = FAMILIES[name], _identical(name)
    params = model.init(jax.random.key(1), x)
    params = model.fit(jax.random.key(2), params, x)  # warm-started refit on the same data
    assert _all_finite(params), params
    samples = model.sample(jax.random.key(3), params, 256)
    assert _all_finite(samples)
    if name == "categorical":
        np.testing.assert_array_equal(samples, 2)
    elif name != "flow_matching":  # the density families collapse onto the point (floors only)
        assert float(jnp.max(jnp.abs(samples - x[:1]))) < 0.5
    if model.log_prob is not None:
        assert _all_finite(model.log_prob(params, samples[:16]))


@pytest.mark.parametrize("name", ["gaussian", "gmm", "kde"])
def test_identical_training_data_far_from_the_origin(name):
    """Identical points at 1e3: the relative floor is 0, the absolute floor (1e-6) keeps the
    covariance positive definite in float32."""
    model, x = FAMILIES[name], _identical(name, value=1e3)
    params = model.fit(jax.random.key(2), model.init(jax.random.key(1), x), x)
    assert _all_finite(params)
    assert _all_finite(model.sample(jax.random.key(3), params, 64))


def test_gmm_with_more_components_than_distinct_points_reseeds_and_stays_finite():
    x = jnp.concatenate([jnp.zeros((32, 2)), jnp.ones((32, 2))]).astype(jnp.float32)
    model = models.gmm(6, 2, em_steps=10)
    params = model.fit(jax.random.key(2), model.init(jax.random.key(1), x), x)
    assert _all_finite(params)
    np.testing.assert_allclose(float(jnp.sum(params.weights)), 1.0, atol=1e-6)
    assert _all_finite(model.sample(jax.random.key(3), params, 64))


# ------------------------------------------------------------------------------------------------
# A fit that turns non-finite is reported

GAUSSIAN = FAMILIES["gaussian"]
DATA = jax.random.normal(jax.random.key(7), (32, 2))
CONFIG = sc.LoopConfig(num_generations=2, num_samples=16, k=2)


def _broken(model):
    """The same family whose fit returns NaN means (a stand-in for a diverging optimiser)."""
    def fit(key, params, data, weights=None):
        params = model.fit(key, params, data, weights)
        return params.replace(mean=params.mean * jnp.nan)

    return model._replace(fit=fit)


def test_retrain_step_reports_a_non_finite_fit():
    params0 = GAUSSIAN.init(KEY, DATA)
    reward = lambda x: x[:, 0]  # noqa: E731
    for model, expected in ((GAUSSIAN, True), (_broken(GAUSSIAN), False)):
        state = sc.retrain.init_state(params0, model=model, config=CONFIG)
        _, info = sc.retrain_step(KEY, state, sc.Hyperparams(), DATA, model=model,
                                  reward_fn=reward, config=CONFIG)
        assert bool(info.fit_is_finite) is expected


def test_non_finite_real_data_under_jit_is_reported_not_raised():
    """Under jit the value checks cannot run: NaN real data reaches the fit, and the step info
    says that the fit is not finite."""
    params0 = GAUSSIAN.init(KEY, DATA)
    state = sc.retrain.init_state(params0, model=GAUSSIAN, config=CONFIG)
    step = jax.jit(lambda real: sc.retrain_step(KEY, state, sc.Hyperparams(real_fraction=0.5),
                                                real, model=GAUSSIAN, reward_fn=lambda x: x[:, 0],
                                                config=CONFIG))
    _, info = step(DATA.at[0, 0].set(jnp.nan))
    assert not bool(info.fit_is_finite)
    _, info = step(DATA)
    assert bool(info.fit_is_finite)


def test_run_history_reports_a_non_finite_fit():
    params0 = GAUSSIAN.init(KEY, DATA)
    _, history = sc.run(KEY, params0, DATA, sc.Hyperparams(), model=_broken(GAUSSIAN),
                        reward_fn=lambda x: x[:, 0], config=CONFIG)
    # Entry t says whether the refit from generation t stayed finite; the last one whether the
    # final params are finite.
    np.testing.assert_array_equal(history["fit_is_finite"], [False, False, False])
    np.testing.assert_array_equal(history["is_finite"], [True, False, False])
