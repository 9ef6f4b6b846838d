"""Tests of the exact population dynamics (selfconsume.theory) against brute force and theory."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import theory
from tests import reference


def _instance(seed, m, spread, beta, *, ties=False, zeros=False):
    """A random (p, rewards) pair whose rewards span `spread` nats once multiplied by beta."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(m))
    if zeros and m > 2:
        p[rng.integers(m)] = 0.0
        p /= p.sum()
    r = rng.uniform(0.0, 1.0, m)
    r = (r - r.min()) / (r.max() - r.min())
    if ties and m > 2:
        r[1] = r[0]
    scale = 1.0 if math.isinf(beta) or beta == 0 else spread / beta
    return p, r * scale


FACTOR_CASES = [
    (m, k, spread, beta)
    for m, k in [(2, 2), (3, 4), (4, 3), (5, 5), (6, 6), (6, 2), (2, 6)]
    for spread, beta in [(1.0, 1.0), (8.0, 0.5), (20.0, 2.5), (20.0, 1.0)]
]


# ------------------------------------------------------------------------------------------------
# curation_factor against brute-force enumeration
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,k,spread,beta", FACTOR_CASES)
def test_curation_factor_float64_matches_enumeration(x64, m, k, spread, beta):
    for seed, (ties, zeros) in enumerate([(False, False), (True, False), (False, True)]):
        p, r = _instance(100 * m + 10 * k + seed, m, spread, beta, ties=ties, zeros=zeros)
        got = theory.curation_factor(jnp.asarray(p), jnp.asarray(r), k=k, beta=beta)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, reference.curation_factor(p, r, k, beta), rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("m,k,spread,beta", FACTOR_CASES[::3])
def test_curation_factor_float32_matches_enumeration(m, k, spread, beta):
    p, r = _instance(7 * m + k, m, spread, beta, ties=True)
    got = theory.curation_factor(jnp.asarray(p, jnp.float32), jnp.asarray(r, jnp.float32), k=k,
                                 beta=beta)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, reference.curation_factor(p, r, k, beta), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("k", [2, 3, 5, math.inf])
@pytest.mark.parametrize("beta", [0.0, 0.7, math.inf])
def test_curation_factor_special_cases_match_enumeration(x64, k, beta):
    p, r = _instance(3, 5, 4.0, 1.0, ties=True, zeros=True)
    r[4] = r.max()  # a tie at the top
    got = theory.curation_factor(jnp.asarray(p), jnp.asarray(r), k=k, beta=beta)
    want = reference.curation_factor(p, r, k, beta)
    on = p > 0
    np.testing.assert_allclose(np.asarray(got)[on], want[on], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.sum(p[on] * np.asarray(got)[on]), 1.0, rtol=1e-9)


def test_k1_and_beta0_mean_no_curation(x64):
    p, r = _instance(4, 6, 5.0, 1.0)
    np.testing.assert_array_equal(theory.curation_factor(p, r, k=1, beta=3.0), np.ones(6))
    np.testing.assert_allclose(theory.curation_factor(p, r, k=4, beta=0.0), np.ones(6), rtol=1e-12)


def test_factor_large_k_approaches_the_exponential_tilt(x64):
    # H_K -> e^{br}/E[e^{br}] as K -> inf; the gap shrinks like 1/K.
    p, r = _instance(5, 6, 3.0, 1.0)
    tilt = theory.curation_factor(p, r, k=math.inf, beta=1.0)
    ks = np.array([64, 256, 1024, 4096])
    gaps = np.array([float(jnp.max(jnp.abs(theory.curation_factor(p, r, k=k, beta=1.0) - tilt)))
                     for k in ks])
    assert np.all(np.diff(gaps) < 0)
    np.testing.assert_allclose(gaps * ks, gaps[-1] * ks[-1], rtol=0.05)  # exactly the 1/K rate


def test_factor_many_states_is_normalised_in_float32():
    rng = np.random.default_rng(6)
    m = 20_000
    p = jnp.asarray(rng.dirichlet(np.ones(m)), jnp.float32)
    r = jnp.asarray(rng.normal(size=m), jnp.float32)
    for k in [2, 64, 1024]:
        h = theory.curation_factor(p, r, k=k, beta=2.0)
        assert abs(float(jnp.sum(p * h)) - 1.0) < 1e-4


def test_factor_extreme_rewards_float32_are_finite():
    rng = np.random.default_rng(7)
    p = jnp.asarray(rng.dirichlet(np.ones(50)), jnp.float32)
    r = jnp.asarray(rng.uniform(-1e4, 1e4, 50), jnp.float32)
    for k in [2, 8, math.inf]:
        q = theory.curated(p, r, k=k, beta=1e3)
        assert np.all(np.isfinite(q)) and abs(float(jnp.sum(q)) - 1.0) < 1e-5


def _factor_by_counts(p, rewards, k, beta):
    """float64 H(x) = K E[w(x) / (w(x) + sum_{i<K} w(X_i))], enumerating the counts of the K-1
    other draws over the M states (C(K+M-2, M-1) terms: 170544 for K = 16, M = 8; unlike the
    ordered tuples of reference.curation_factor, M^(K-1))."""
    p, r = np.asarray(p, np.float64), np.asarray(rewards, np.float64)
    m, n = len(p), k - 1
    bars = np.array(list(itertools.combinations(range(n + m - 1), m - 1))).reshape(-1, m - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + m - 1)],
                           axis=1)
    counts = np.diff(edges, axis=1) - 1  # (terms, M), each row summing to K - 1
    log_p = np.log(np.where(p > 0, p, 1.0))
    log_prob = (math.lgamma(k) - np.sum(_lgamma_int(counts), axis=1)
                + np.sum(counts * log_p[None, :], axis=1))
    prob = np.where(np.all((counts == 0) | (p[None, :] > 0), axis=1), np.exp(log_prob), 0.0)
    h = np.empty(m)
    for x in range(m):  # w(y) / w(x) = e^{beta (r(y) - r(x))}, capped: the ratio is then ~0
        ratio = np.exp(np.minimum(beta * (r - r[x]), 700.0))
        h[x] = k * np.sum(prob / (1.0 + counts @ ratio))
    return h


def _lgamma_int(counts):
    table = np.array([math.lgamma(c + 1) for c in range(int(counts.max()) + 1)])
    return table[counts]


# Reward levels in nats (beta * r): three clusters of nearby levels (whose curation is not
# best-of-k) separated by 300 to 2000 nats, and a state with p = 0 inside a 1000-nat gap.
SEPARATED_NATS = np.array([0.0, 0.7, 2.0, 300.0, 301.5, 1300.0, 3300.0, 3300.4, 800.0])


@pytest.mark.parametrize("k", [2, 4, 16])
@pytest.mark.parametrize("beta", [0.5, 20.0])
def test_factor_with_levels_thousands_of_nats_apart_matches_enumeration(x64, k, beta):
    # A uniform grid of nodes over these 3300 nats would be 25 nats apart (the integrand of each
    # state is O(1) wide); the quadrature skips the gaps between clusters of levels instead.
    rng = np.random.default_rng(k)
    p = rng.dirichlet(np.ones(9))
    p[8] = 0.0
    p /= p.sum()
    r = SEPARATED_NATS / beta
    want = _factor_by_counts(p, r, k, beta)
    law = p * want / np.sum(p * want)
    # float64: the quadrature's own error, e^-36 truncation and a node spacing below 0.35
    # (trapezoid error ~e^(-pi^2 / h) < 1e-12), with margin.
    got = theory.curation_factor(jnp.asarray(p), jnp.asarray(r), k=k, beta=beta)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # float32: dominated by the rounding of beta * r at 3300 nats (2e-4 nats, so 2e-4 relative
    # in the weights); the measured law error is below 1e-5, the tolerance is 3e-5.
    r32 = jnp.asarray(r, jnp.float32)
    got32 = theory.curated(jnp.asarray(p, jnp.float32), r32, k=k, beta=beta)
    assert got32.dtype == jnp.float32
    want32 = _factor_by_counts(p, np.asarray(r32, np.float64), k, beta)
    np.testing.assert_allclose(got32, p * want32 / np.sum(p * want32), atol=3e-5)
    np.testing.assert_allclose(got32, law, atol=3e-5)


@pytest.mark.parametrize("k", [2, 4, 16])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_factor_with_levels_millions_of_nats_apart_is_best_of_k(x64, k, dtype):
    # beta * (smallest gap between levels) = 500 nats: K-way curation is best-of-K up to e^-500,
    # so the finite-beta law equals the beta = inf law; the levels span 2e7 nats, where s = log u
    # itself is not resolved to 1 in float32 (the nodes are kept relative to the levels).
    r = np.array([-1e4, 1e4, 0.0, 5e3, -5e3, 1e4 - 0.5, 3.0, -2.0, 7e3])
    p = np.array([0.1, 0.2, 0.05, 0.15, 0.1, 0.1, 0.1, 0.2, 0.0])
    p_, r_ = jnp.asarray(p, dtype), jnp.asarray(r, dtype)
    exact = theory.curated(p_, r_, k=k, beta=jnp.inf)
    got = theory.curated(p_, r_, k=k, beta=1e3)
    assert got.dtype == dtype
    # Nine isolated levels (the p = 0 one included) take ~16 nats of nodes each in float64 and
    # ~11 in float32: spacing h ~ 0.6 and ~0.85 at the default node counts, trapezoid error of
    # order e^(-pi^2 / h): measured law errors up to 2.5e-7 (float64) and 1.1e-5 (float32);
    # tolerances 1e-6 and 5e-5.
    h = float(theory.quadrature_step(p_, r_, k=k, beta=1e3))
    assert 0.0 < h < (0.7 if dtype == jnp.float64 else 1.0)
    np.testing.assert_allclose(got, exact, atol=1e-6 if dtype == jnp.float64 else 5e-5)
    # The state with p = 0 gets the factor it would have: K F^(K-1), F = P(r <= 7e3) = 0.7.
    factor = theory.curation_factor(p_, r_, k=k, beta=1e3)
    np.testing.assert_allclose(factor[8], k * 0.7 ** (k - 1),
                               rtol=1e-5 if dtype == jnp.float64 else 1e-3)


# ------------------------------------------------------------------------------------------------
# The retraining map and trajectories
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,beta,a", [(2, 1.0, 0.0), (3, 2.0, 0.3), (math.inf, 0.5, 0.5),
                                      (4, math.inf, 0.2)])
def test_retrain_map_matches_reference(x64, k, beta, a):
    p, r = _instance(8, 5, 3.0, 1.0, ties=True)
    p_data = np.full(5, 0.2)
    got = theory.retrain_map(p, r, k=k, beta=beta, p_data=p_data if a else None, real_fraction=a)
    want = reference.retrain_map(p, r, k, beta, p_data if a else None, a)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)


def test_trajectory_iterates_the_map(x64):
    p, r = _instance(9, 6, 4.0, 1.0)
    p_data = np.full(6, 1 / 6)
    ps = theory.trajectory(p, r, num_generations=5, k=3, beta=1.0, p_data=p_data,
                           real_fraction=0.25)
    assert ps.shape == (6, 6)
    np.testing.assert_array_equal(ps[0], p)
    q = jnp.asarray(p)
    for t in range(1, 6):
        q = theory.retrain_map(q, r, k=3, beta=1.0, p_data=p_data, real_fraction=0.25)
        np.testing.assert_allclose(ps[t], q, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ps.sum(axis=1), 1.0, rtol=1e-12)


def test_trajectory_vmaps_over_beta_and_real_fraction_and_compiles_once():
    p, r = _instance(10, 8, 4.0, 1.0)
    p, r = jnp.asarray(p, jnp.float32), jnp.asarray(r, jnp.float32)
    p_data = jnp.full(8, 1 / 8)
    traces = []

    @jax.jit
    def run(beta, a):
        traces.append(None)
        return theory.trajectory(p, r, num_generations=4, k=4, beta=beta, p_data=p_data,
                                 real_fraction=a)

    betas = jnp.array([0.0, 0.5, 2.0])
    fractions = jnp.array([0.0, 0.1, 0.5, 1.0])
    grid = jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None))(betas, fractions)
    assert grid.shape == (3, 4, 5, 8)
    for i, beta in enumerate(betas):
        for j, a in enumerate(fractions):
            np.testing.assert_allclose(grid[i, j], run(beta, a), rtol=2e-6, atol=1e-7)
    assert len(traces) == 1  # vmap batches the traced program; the loop never retraced
    np.testing.assert_allclose(grid[:, 3, 1:], jnp.broadcast_to(p_data, (3, 4, 8)), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The theorems, on random instances
# ------------------------------------------------------------------------------------------------

THEOREM_CASES = [(seed, k, beta) for seed in range(2) for k, beta in
                 [(2, 1.0), (4, 3.0), (16, 0.5), (math.inf, 1.0), (3, math.inf)]]


@pytest.mark.parametrize("seed,k,beta", THEOREM_CASES)
def test_check_theorems_hold_on_random_instances(x64, seed, k, beta):
    p0, r = _instance(seed, 12, 6.0, beta if math.isfinite(beta) else 1.0, ties=True)
    p_data = np.random.default_rng(seed + 50).dirichlet(np.ones(12))
    checks = theory.check_theorems(p0, r, k=k, beta=beta, p_data=p_data, real_fraction=0.2,
                                   num_generations=40)
    assert set(checks) == {"normalization", "level_sets", "monotone_reward", "reward_gain_bound",
                           "limit", "kl_bound", "fixed_point"}
    failed = {name: c for name, c in checks.items() if not c["holds"]}
    assert not failed


def test_monotone_reward_and_gain_bound_directly(x64):
    p, r = _instance(11, 10, 3.0, 1.0)
    ps = theory.trajectory(p, r, num_generations=30, k=3, beta=1.0)
    mean_r = np.asarray(ps) @ r
    assert np.all(np.diff(mean_r) >= -1e-12)
    e_w = np.asarray(ps) @ np.exp(r)
    bounds = np.array([theory.reward_gain_bound(q, r, k=3, beta=1.0) for q in ps[:-1]])
    # the bound uses r* on the support, which is the global maximum here (p > 0 everywhere)
    np.testing.assert_allclose(bounds[0], 2 / 3 * (p @ np.exp(2 * r) - (p @ np.exp(r)) ** 2)
                               / np.exp(r.max()), rtol=1e-12)
    assert np.all(np.diff(e_w) - bounds >= -1e-12)
    assert np.all(bounds >= 0)


def test_pure_curation_converges_to_limit_keeping_tied_proportions(x64):
    r = np.array([1.0, 3.0, 0.0, 3.0, 2.0])
    p0 = np.array([0.3, 0.1, 0.2, 0.3, 0.1])
    lim = theory.limit(p0, r)
    np.testing.assert_allclose(lim, [0.0, 0.25, 0.0, 0.75, 0.0], rtol=1e-14)
    for k in [2, 5, math.inf]:
        ps = theory.trajectory(p0, r, num_generations=200, k=k, beta=1.0)
        np.testing.assert_allclose(ps[-1], lim, atol=1e-6)
        np.testing.assert_allclose(ps[:, 3] / ps[:, 1], 3.0, rtol=1e-10)  # tie ratio is kept


def test_infinite_k_is_exponential_tilting(x64):
    p0, r = _instance(12, 7, 2.0, 1.0)
    ps = theory.trajectory(p0, r, num_generations=6, k=math.inf, beta=0.8)
    for t in range(7):
        want = p0 * np.exp(t * 0.8 * r)
        np.testing.assert_allclose(ps[t], want / want.sum(), rtol=1e-10)


@pytest.mark.parametrize("a", [0.05, 0.3, 0.9])
def test_kl_to_data_is_bounded(x64, a):
    p0, r = _instance(13, 9, 10.0, 1.0)
    p_data = np.random.default_rng(1).dirichlet(np.ones(9))
    ps = np.asarray(theory.trajectory(p0, r, num_generations=60, k=4, beta=1.0, p_data=p_data,
                                      real_fraction=a))
    kl = np.sum(p_data * np.log(p_data / ps[1:]), axis=1)
    assert np.all(kl <= math.log(1 / a) + 1e-12)


@pytest.mark.parametrize("k", [2, 6, math.inf])
@pytest.mark.parametrize("a", [0.1, 0.5])
def test_fixed_point_is_a_fixed_point(x64, k, a):
    p_data, r = _instance(14, 8, 5.0, 1.0, ties=True)
    star = theory.fixed_point(p_data, r, k=k, beta=1.0, real_fraction=a)
    assert np.all(np.isfinite(star))
    image = theory.retrain_map(star, r, k=k, beta=1.0, p_data=p_data, real_fraction=a)
    np.testing.assert_allclose(image, star, atol=1e-10)
    # ... and the trajectory from p_data converges to it.
    ps = theory.trajectory(p_data, r, num_generations=2000, k=k, beta=1.0, p_data=p_data,
                           real_fraction=a)
    np.testing.assert_allclose(ps[-1], star, atol=1e-9)


def test_fixed_point_closed_form(x64):
    p_data, r = _instance(15, 6, 3.0, 1.0)
    a = 0.25
    star = np.asarray(theory.fixed_point(p_data, r, k=math.inf, beta=1.0, real_fraction=a))
    lam = (1 - a) / a
    z = np.sum(star * np.exp(r))  # Z = E_{p*}[e^{br}] at the fixed point
    np.testing.assert_allclose(star, p_data / (1 + lam - lam * np.exp(r) / z), rtol=1e-10)


def test_real_fraction_lambda_conversion():
    np.testing.assert_allclose(sc.real_fraction_from_lambda(jnp.array([0.0, 1.0, 3.0, jnp.inf])),
                               [1.0, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(sc.lambda_from_real_fraction(jnp.array([1.0, 0.5, 0.25])),
                               [0.0, 1.0, 3.0])


def test_check_theorems_can_fail(monkeypatch):
    """The checks are not vacuous: a factor that decreases with the reward is caught."""
    honest = theory.curation_factor

    def reversed_factor(p, rewards, **kwargs):
        return honest(p, -jnp.asarray(rewards), **kwargs)

    monkeypatch.setattr(theory, "curation_factor", reversed_factor)
    r = jnp.arange(11, dtype=jnp.float32) / 10  # a size used nowhere else: no cached compile
    checks = theory.check_theorems(jnp.full(11, 1 / 11), r, k=3, beta=1.0, num_generations=5)
    assert not checks["level_sets"]["holds"]
    assert not checks["monotone_reward"]["holds"]
    assert not checks["reward_gain_bound"]["holds"]
    assert not checks["limit"]["holds"]


# ------------------------------------------------------------------------------------------------
# Argument errors
# ------------------------------------------------------------------------------------------------

P3, R3 = jnp.array([0.2, 0.3, 0.5]), jnp.array([0.0, 1.0, 2.0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: theory.curation_factor(jnp.array([0.2, 0.3]), R3, k=2), r"shape of `p`"),
        (lambda: theory.curation_factor(jnp.array([0.5, 0.6, 0.1]), R3, k=2),
         r"`p` must sum to 1.*got sum 1.2"),
        (lambda: theory.curation_factor(jnp.array([-0.1, 0.6, 0.5]), R3, k=2),
         r"`p` must be non-negative"),
        (lambda: theory.curation_factor(jnp.ones((3, 1)) / 3, R3, k=2), r"`p` must be a 1-D"),
        (lambda: theory.curation_factor(P3, jnp.array([0.0, jnp.nan, 1.0]), k=2),
         r"`rewards` must be finite"),
        (lambda: theory.curation_factor(P3, R3, k=0), r"`k` must be >= 1 or jnp.inf; got 0"),
        (lambda: theory.curation_factor(P3, R3, k=1.5), r"`k` must be an integer >= 1 or jnp.inf"),
        (lambda: theory.curation_factor(P3, R3, k=2, beta=-0.5), r"`beta` must be >= 0"),
        (lambda: theory.retrain_map(P3, R3, k=2, real_fraction=0.5),
         r"`p_data` is required when `real_fraction` is not 0"),
        (lambda: theory.retrain_map(P3, R3, k=2, p_data=P3, real_fraction=1.5),
         r"`real_fraction` must be in \[0, 1\]; got 1.5"),
        (lambda: theory.fixed_point(P3, R3, k=2, real_fraction=0.0),
         r"`real_fraction` must be in \(0, 1\]"),
        (lambda: theory.trajectory(P3, R3, num_generations=-1, k=2),
         r"`num_generations` must be >= 0; got -1"),
        (lambda: theory.limit(jnp.array([]), jnp.array([])), r"`p0` must have at least one"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
