"""Tests of K-way Bradley–Terry curation (selfconsume.curation)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import selfconsume as sc
from tests import reference

# Statistical tests below use fixed keys, so each either always passes or always fails; the stated
# significance level ALPHA is the probability that a correct implementation fails with an
# arbitrary key (the expected false-failure rate per assertion).
ALPHA = 1e-3


def _chi2_pvalue(counts, probs):
    """Pearson chi-square p-value of counts against probabilities (zero-probability cells must
    have zero counts, which is asserted separately)."""
    counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
    on = probs > 0
    assert counts[~on].sum() == 0, "a zero-probability outcome was observed"
    if on.sum() == 1:  # a single possible outcome: the assertion above is the whole test
        return 1.0
    expected = probs[on] / probs[on].sum() * counts.sum()
    return stats.chisquare(counts[on], expected).pvalue


# ------------------------------------------------------------------------------------------------
# choice_probabilities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 7.0, math.inf])
def test_choice_probabilities_match_reference(beta):
    rng = np.random.default_rng(0)
    rewards = np.round(rng.normal(size=(5, 4)), 1)  # rounding creates ties
    rewards[0] = [1.0, 1.0, 0.0, 1.0]
    got = sc.choice_probabilities(jnp.asarray(rewards, jnp.float32), beta=beta)
    np.testing.assert_allclose(got, reference.choice_probabilities(rewards, beta), atol=1e-6)
    np.testing.assert_allclose(np.sum(got, axis=-1), 1.0, atol=1e-6)


def test_choice_probabilities_nan_gets_zero_probability():
    got = sc.choice_probabilities(jnp.array([[jnp.nan, 0.0, 1.0], [jnp.nan] * 3]), beta=1.0)
    np.testing.assert_allclose(got[0], reference.choice_probabilities([-np.inf, 0.0, 1.0], 1.0),
                               atol=1e-6)
    np.testing.assert_allclose(got[1], [1 / 3] * 3, atol=1e-6)


def test_choice_probabilities_extreme_rewards_are_finite():
    r = jnp.array([[1e4, -1e4, 1e4 - 1e-2], [-1e4, -1e4 + 1.0, 0.0]], jnp.float32)
    got = sc.choice_probabilities(r, beta=1e3)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(np.sum(got, axis=-1), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# curate: exact properties
# ------------------------------------------------------------------------------------------------


def test_k1_is_identity():
    samples = jnp.arange(10, dtype=jnp.int32)
    rewards = jnp.linspace(0.0, 1.0, 10)
    out = sc.curate(jax.random.key(0), samples, rewards, k=1, beta=3.0)
    np.testing.assert_array_equal(out.samples, samples)
    np.testing.assert_array_equal(out.rewards, rewards)
    np.testing.assert_array_equal(out.index, np.zeros(10, np.int32))


def test_best_of_k_picks_group_maximum():
    key_r, key_c = jax.random.split(jax.random.key(1))
    n, k = 500, 7
    rewards = jax.random.normal(key_r, (n * k,))
    out = sc.curate(key_c, jnp.arange(n * k), rewards, k=k, beta=jnp.inf)
    groups = np.asarray(rewards).reshape(n, k)
    np.testing.assert_array_equal(out.index, groups.argmax(axis=1))
    np.testing.assert_array_equal(out.rewards, groups.max(axis=1))


def test_best_of_k_breaks_ties_uniformly():
    # Each group has maxima at positions 1 and 3 (and lower rewards elsewhere).
    n, k = 4000, 4
    rewards = jnp.tile(jnp.array([0.0, 2.0, 1.0, 2.0]), n)
    out = sc.curate(jax.random.key(2), jnp.arange(n * k), rewards, k=k, beta=jnp.inf)
    index = np.asarray(out.index)
    assert set(np.unique(index)) == {1, 3}
    # Binomial(n, 1/2) two-sided test at level ALPHA.
    assert stats.binomtest(int((index == 1).sum()), n, 0.5).pvalue > ALPHA


@pytest.mark.parametrize(
    "samples",
    [
        jnp.arange(24, dtype=jnp.int32),
        jnp.arange(24 * 3, dtype=jnp.float32).reshape(24, 3),
        jnp.arange(24 * 4 * 4 * 3, dtype=jnp.float32).reshape(24, 4, 4, 3),
    ],
    ids=["indices", "vectors", "images"],
)
def test_any_trailing_shape(samples):
    k = 3
    rewards = jax.random.normal(jax.random.key(3), (24,))
    out = sc.curate(jax.random.key(4), samples, rewards, k=k, beta=2.0)
    assert out.samples.shape == (8,) + samples.shape[1:]
    assert out.samples.dtype == samples.dtype
    assert out.index.dtype == jnp.int32
    rows = np.arange(8) * k + np.asarray(out.index)
    np.testing.assert_array_equal(out.samples, np.asarray(samples)[rows])
    np.testing.assert_array_equal(out.rewards, np.asarray(rewards)[rows])


def test_nan_never_chosen_while_a_finite_candidate_exists():
    n, k = 2000, 5
    key_r, key_m, key_c = jax.random.split(jax.random.key(5), 3)
    rewards = jax.random.normal(key_r, (n * k,))
    nan_mask = jax.random.bernoulli(key_m, 0.6, (n * k,))
    rewards = jnp.where(nan_mask, jnp.nan, rewards)
    for beta in [0.0, 1.0, jnp.inf]:
        out = sc.curate(key_c, jnp.arange(n * k), rewards, k=k, beta=beta)
        has_finite = np.any(~np.asarray(nan_mask).reshape(n, k), axis=1)
        assert np.all(np.isfinite(np.asarray(out.rewards)[has_finite]))
        assert np.all(np.isnan(np.asarray(out.rewards)[~has_finite]))  # all-NaN groups stay visible
        assert np.all((np.asarray(out.index) >= 0) & (np.asarray(out.index) < k))


def test_extreme_rewards_float32_are_finite():
    n, k = 256, 4
    rewards = jax.random.uniform(jax.random.key(6), (n * k,), minval=-1e4, maxval=1e4)
    out = sc.curate(jax.random.key(7), jnp.arange(n * k), rewards, k=k, beta=1e3)
    assert np.all(np.isfinite(out.rewards))
    # At beta = 1e3 the gaps between uniform rewards on [-1e4, 1e4] are ~ 1e3 nats: best-of-k.
    np.testing.assert_array_equal(out.index, np.asarray(rewards).reshape(n, k).argmax(axis=1))


def test_vmapped_equals_looped():
    keys = jax.random.split(jax.random.key(8), 5)
    rewards = jax.random.normal(jax.random.key(9), (60,))
    samples = jnp.arange(60)
    batched = jax.vmap(lambda key: sc.curate(key, samples, rewards, k=4, beta=1.5))(keys)
    for i, key in enumerate(keys):
        single = sc.curate(key, samples, rewards, k=4, beta=1.5)
        np.testing.assert_array_equal(batched.index[i], single.index)
        np.testing.assert_array_equal(batched.samples[i], single.samples)


def test_traced_beta_compiles_once_and_vmaps():
    traces = []

    @jax.jit
    def kept_index(key, beta):
        traces.append(None)
        return sc.curate(key, jnp.arange(40), jnp.linspace(0.0, 1.0, 40), k=4, beta=beta).index

    for beta in [0.0, 0.5, 2.0, jnp.inf]:
        kept_index(jax.random.key(10), jnp.float32(beta))
    assert len(traces) == 1
    betas = jnp.array([0.0, 1.0, jnp.inf])
    batched = jax.vmap(kept_index, in_axes=(None, 0))(jax.random.key(11), betas)
    np.testing.assert_array_equal(batched[2], np.full(10, 3))  # best of an increasing group


def test_num_candidates_masks_the_rest():
    n, k = 3000, 6
    rewards = jnp.tile(jnp.arange(k, dtype=jnp.float32), n)  # later candidates are better
    for m in [1, 2, 6]:
        out = sc.curate(jax.random.key(12), jnp.arange(n * k), rewards, k=k, beta=1.0,
                        num_candidates=m)
        counts = np.bincount(np.asarray(out.index), minlength=k)
        assert counts[m:].sum() == 0
        probs = np.zeros(k)
        probs[:m] = reference.choice_probabilities(np.arange(m, dtype=float), 1.0)
        assert _chi2_pvalue(counts, probs) > ALPHA


# ------------------------------------------------------------------------------------------------
# curate: distribution of the kept candidate
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,beta", [(2, 1.0), (3, 0.5), (4, 2.0), (5, math.inf)])
def test_within_group_choice_frequencies(k, beta):
    n = 20000
    group = np.array([0.3, -0.5, 1.2, 0.0, 0.7][:k])
    out = sc.curate(jax.random.key(13), jnp.arange(n * k), jnp.tile(jnp.asarray(group), n), k=k,
                    beta=beta)
    counts = np.bincount(np.asarray(out.index), minlength=k)
    assert _chi2_pvalue(counts, reference.choice_probabilities(group, beta)) > ALPHA


@pytest.mark.parametrize("k,beta", [(2, 1.0), (3, 2.0), (4, 0.7), (4, math.inf)])
def test_curated_samples_follow_the_theory(k, beta):
    """Curating iid draws from p reproduces theory.curated(p): chi-square at level ALPHA."""
    rewards = jnp.array([0.0, 0.5, 1.0, 1.0, 2.0, -1.0])
    p = jnp.array([0.3, 0.2, 0.15, 0.1, 0.05, 0.2])
    n = 40000
    key_draw, key_cur = jax.random.split(jax.random.key(14))
    states = jax.random.choice(key_draw, p.shape[0], (n * k,), p=p)
    out = sc.curate(key_cur, states, rewards[states], k=k, beta=beta)
    counts = np.bincount(np.asarray(out.samples), minlength=p.shape[0])
    expected = reference.curation_factor(np.asarray(p), np.asarray(rewards), k, beta) * np.asarray(p)
    np.testing.assert_allclose(sc.theory.curated(p, rewards, k=k, beta=beta), expected, atol=1e-5)
    assert _chi2_pvalue(counts, expected) > ALPHA
    # Power check: the same counts are firmly rejected against the uncurated law p.
    assert _chi2_pvalue(counts, p) < 1e-12


# ------------------------------------------------------------------------------------------------
# curate: argument errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0), r"`k` must be >= 1; got 0"),
        (dict(k=2.5), r"`k` must be an integer"),
        (dict(k=5), r"multiple of `k`=5; got 12"),
        (dict(k=3, beta=-1.0), r"`beta` must be >= 0.*got -1.0"),
        (dict(k=3, beta=jnp.ones(2)), r"`beta` must be a scalar"),
        (dict(k=3, beta=jnp.nan), r"`beta` must be >= 0.*got nan"),
        (dict(k=3, num_candidates=4), r"`num_candidates` must be in \[1, 3\]; got 4"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sc.curate(jax.random.key(0), jnp.arange(12), jnp.zeros(12), **kwargs)


def test_shape_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"same leading size; got \(10,\) and \(12,\)"):
        sc.curate(key, jnp.arange(10), jnp.zeros(12), k=2)
    with pytest.raises(ValueError, match=r"`rewards` must be 1-D.*got shape \(6, 2\)"):
        sc.curate(key, jnp.arange(12), jnp.zeros((6, 2)), k=2)
    with pytest.raises(ValueError, match=r"`rewards` must not be empty"):
        sc.curate(key, jnp.arange(0), jnp.zeros(0), k=2)
    with pytest.raises(ValueError, match=r"`rewards` must have a non-empty last axis"):
        sc.choice_probabilities(jnp.float32(1.0))
