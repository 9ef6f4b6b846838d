"""Property-based tests (hypothesis) of the invariants of curation and of the exact dynamics.

* ``choice_probabilities`` sums to one over the candidates and is invariant to shifting rewards;
* ``curate`` keeps exactly one candidate of each group (never a NaN one while the group has a
  finite reward, never one beyond ``num_candidates``);
* ``theory.curated`` sums to one, is invariant to reward shifts and moves mass towards higher
  reward (every upper tail ``P(r >= level)`` grows, so the expected reward does not decrease);
* ``theory.retrain_map`` maps the probability simplex into itself.

The examples are derandomised (the suite is deterministic) and have fixed shapes; each property
calls one jitted function, so that the examples reuse one compiled program (one per static ``k``).
The population properties run in float64, where the quadrature of ``theory.curation_factor`` is
accurate to about 1e-9 relative for the reward spreads drawn here (``beta * spread <= 60`` nats,
see its docstring); the tolerances below are set from that and stated at each check.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import selfconsume as sc
from selfconsume import theory

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

GROUPS, K = 6, 4  # curation: 6 groups of 4 candidates
M = 6  # population: 6 states
KS = [1, 2, 3, 7, math.inf]

finite_rewards = st.floats(-50.0, 50.0, allow_nan=False, width=64)
betas = st.floats(0.0, 10.0, width=64)
shifts = st.floats(-100.0, 100.0, width=64)


def _masses(zero_allowed: bool = True):
    """Unnormalised non-negative masses of the M states with at least one positive entry."""
    elements = st.floats(0.0, 1.0, width=64) if zero_allowed else st.floats(0.05, 1.0, width=64)
    return hnp.arrays(np.float64, (M,), elements=elements).filter(lambda a: a.sum() > 0.1)


# ------------------------------------------------------------------------------------------------
# Curation


@jax.jit
def _probabilities(rewards, beta, shift):
    return (sc.choice_probabilities(rewards, beta=beta),
            sc.choice_probabilities(rewards + shift, beta=beta))


@SETTINGS
@given(rewards=hnp.arrays(np.float64, (GROUPS, K), elements=finite_rewards), beta=betas,
       shift=shifts)
def test_choice_probabilities_sum_to_one_and_ignore_shifts(rewards, beta, shift):
    with jax.enable_x64(True):
        p, shifted = map(np.asarray, _probabilities(rewards, beta, shift))
    assert np.all(p >= 0)
    # Sums of K = 4 float64 numbers in [0, 1]: a few ulps.
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    # r + shift is rounded to about 1e-14 relative (|r + shift| <= 150), and the logits
    # beta * (r - max r) carry that error times beta <= 10: 1e-11 in the probabilities.
    np.testing.assert_allclose(shifted, p, rtol=0, atol=1e-10)


@jax.jit
def _curate(seed, rewards, beta, num_candidates):
    samples = jnp.arange(GROUPS * K, dtype=jnp.int32)
    return sc.curate(jax.random.key(seed), samples, rewards, k=K, beta=beta,
                     num_candidates=num_candidates)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1),
       rewards=hnp.arrays(np.float32, (GROUPS * K,),
                          elements=st.one_of(st.floats(-1e4, 1e4, width=32), st.just(np.nan))),
       beta=st.one_of(st.floats(0.0, 1e3, width=32), st.just(np.inf)),
       num_candidates=st.integers(1, K))
def test_curate_keeps_exactly_one_candidate_per_group(seed, rewards, beta, num_candidates):
    kept = _curate(seed, rewards, np.float32(beta), num_candidates)
    ids, index, kept_rewards = (np.asarray(a) for a in (kept.samples, kept.index, kept.rewards))
    groups = np.arange(GROUPS)
    # One row per group, taken from inside that group, among its first num_candidates.
    assert ids.shape == index.shape == kept_rewards.shape == (GROUPS,)
    np.testing.assert_array_equal(ids, groups * K + index)
    assert np.all((index >= 0) & (index < num_candidates))
    np.testing.assert_array_equal(kept_rewards, rewards[ids])  # NaN == NaN here
    # A NaN candidate is kept only when every competing candidate of its group is NaN.
    competing = rewards.reshape(GROUPS, K)[:, :num_candidates]
    has_finite = ~np.all(np.isnan(competing), axis=1)
    assert not np.any(np.isnan(kept_rewards) & has_finite)


# ------------------------------------------------------------------------------------------------
# Exact dynamics


@functools.lru_cache(maxsize=None)
def _curated(k):
    return jax.jit(functools.partial(theory.curated, k=k))


@functools.lru_cache(maxsize=None)
def _retrain_map(k):
    return jax.jit(functools.partial(theory.retrain_map, k=k))


def _upper_tails(p, rewards):
    """P(r >= level) at each state's reward level."""
    return np.array([p[rewards >= level].sum() for level in rewards])


@SETTINGS
@given(masses=_masses(), rewards=hnp.arrays(np.float64, (M,), elements=st.floats(-3.0, 3.0)),
       beta=betas, shift=st.floats(-20.0, 20.0), k=st.sampled_from(KS))
def test_curated_is_a_law_invariant_to_shifts_that_raises_rewards(masses, rewards, beta, shift,
                                                                  k):
    p = masses / masses.sum()
    with jax.enable_x64(True):
        q = np.asarray(_curated(k)(p, rewards, beta=beta))
        q_shifted = np.asarray(_curated(k)(p, rewards + shift, beta=beta))
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(), 1.0, rtol=0, atol=1e-12)  # renormalised: rounding only
    assert np.all(q[p == 0] == 0)
    # beta * (r - max r) moves by about 1e-14 under the shift; the quadrature nodes follow the
    # same shifted logits, so the two laws agree to the quadrature's accuracy, ~1e-9.
    np.testing.assert_allclose(q_shifted, q, rtol=0, atol=1e-8)
    # Mass moves towards higher reward: every upper tail grows (first-order dominance), hence
    # the expected reward does not decrease. Slack: 1e-8, the quadrature error of the tails.
    assert np.all(_upper_tails(q, rewards) >= _upper_tails(p, rewards) - 1e-8)
    assert q @ rewards >= p @ rewards - 1e-8 * np.abs(rewards).max()


@SETTINGS
@given(masses=_masses(), data_masses=_masses(),
       rewards=hnp.arrays(np.float64, (M,), elements=st.floats(-3.0, 3.0)), beta=betas,
       real_fraction=st.floats(0.0, 1.0), k=st.sampled_from(KS))
def test_retrain_map_maps_the_simplex_into_itself(masses, data_masses, rewards, beta,
                                                  real_fraction, k):
    p, p_data = masses / masses.sum(), data_masses / data_masses.sum()
    with jax.enable_x64(True):
        q = np.asarray(_retrain_map(k)(p, rewards, beta=beta, p_data=p_data,
                                       real_fraction=real_fraction))
    assert q.shape == (M,) and np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(), 1.0, rtol=0, atol=1e-12)  # renormalised: rounding only
    # The support never grows beyond the model's and the data's.
    outside = (p == 0) & ((p_data == 0) | (real_fraction == 0))
    assert np.all(q[outside] == 0)
