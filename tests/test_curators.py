"""Tests of the curators (selfconsume.curators): exact kept laws against enumeration, samplers
against the exact laws, pytree structure, argument errors, traced invalid values, and the
curator=None paths.

The references are in tests/curator_reference.py (NumPy, independent of the package): the kept
law of one group by enumeration of all K-tuples and all rankings, the population limit of pooled
top-fraction selection, and a simulation of its finite-n law.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import selfconsume as sc
from selfconsume import curators as cur
from selfconsume import theory
from tests import curator_reference as ref

# Statistical tests below use fixed keys and seeds, so each either always passes or always fails;
# ALPHA is the significance level of each assertion: the probability that a correct
# implementation fails it with an arbitrary key (the expected false-failure rate per assertion).
ALPHA = 1e-3
INF = math.inf

# The exact factors are closed forms or trapezoidal rules on analytic integrands, which converge
# spectrally (exponentially in the number of nodes): against enumeration in float64 the measured
# maximum absolute errors of H are 3.5e-14 (sequential), 1.1e-14 (luce), 1.0e-14 (mixture),
# 7.6e-15 (thurstone, adversarial), 4.4e-15 (top_m) and 4.2e-15 (top_fraction, against its
# population limit). 1e-10 leaves four orders of magnitude for other platforms while failing
# any modelling error (those are O(1e-2) here).
EXACT_TOL = 1e-10


# ------------------------------------------------------------------------------------------------
# Curator builders: (factory, reference spec). The factory runs inside the test, so that under the
# x64 fixture the rates are float64 leaves (a curator built outside holds float32 rates).
# ------------------------------------------------------------------------------------------------


def _luce(beta, column=None):
    return (lambda: cur.luce(beta, column=column)), ("luce", beta, column)


def _top_m(m, beta, column=None):
    return (lambda: cur.top_m(m, beta, column=column)), ("top_m", m, beta, column)


def _thurstone(sigma, column=None):
    return (lambda: cur.thurstone(sigma, column=column)), ("thurstone", sigma, column)


def _adversarial(base, eps):
    return (lambda: cur.adversarial(base[0](), eps)), ("adversarial", base[1], eps)


def _mixture(components, weights):
    return ((lambda: cur.mixture([c[0]() for c in components], weights)),
            ("mixture", [c[1] for c in components], list(weights)))


def _sequential(first, second):
    return (lambda: cur.sequential(first[0](), second[0]())), ("sequential", first[1], second[1])


# ------------------------------------------------------------------------------------------------
# 1. Exact factor against enumeration (float64)
# ------------------------------------------------------------------------------------------------

# M = 4 states with ties in both reward columns (states 1, 2 in column 0; states 0, 3 in column 1).
TABLE4 = np.array([[0.0, 1.0], [0.8, 0.0], [0.8, 2.0], [1.5, 1.0]])


def _case(pair, ks, two_columns=False, id=None):
    return pytest.param(pair, ks, two_columns, id=id)


# Each distinct (dtype, M, K, m) compiles the Plackett-Luce quadrature once (~5 s on two CPU
# cores), so Luce-based cases use K in {2, 4} and top-m cases K in {m, m + 1}; the Thurstone and
# sequential factors are cheap to compile and cover K = 2, 3, 4 (the Thurstone enumeration uses
# scipy quad per distinct reward tuple, memoised in the reference: cheap up to K = 4).
EXACT_CASES = (
    [_case(_luce(b), (2, 4), id=f"luce-{b}") for b in (0.0, 1.3, 4.0, INF)]
    + [_case(_luce(1.3, column=1), (2, 4), True, id="luce-1.3-col1"),
       _case(_luce(INF, column=1), (2, 4), True, id="luce-inf-col1")]
    + [_case(_top_m(1, 0.7), (2, 4), id="top_m-1-0.7")]
    + [_case(_top_m(m, b), (m, m + 1), id=f"top_m-{m}-{b}")
       for m, b in [(2, 0.7), (2, INF), (3, 2.0), (3, INF)]]
    + [_case(_top_m(2, 1.5, column=1), (2, 3), True, id="top_m-2-1.5-col1")]
    + [_case(_thurstone(s), (2, 3, 4), id=f"thurstone-{s}") for s in (0.0, 0.3, 1.0, INF)]
    + [_case(_thurstone(0.6, column=1), (2, 3), True, id="thurstone-0.6-col1")]
    + [_case(_adversarial(base, eps), ks, id=f"adversarial-{name}-{eps}")
       for name, base, ks in [("luce", _luce(1.5), (2, 4)), ("luce_inf", _luce(INF), (2, 4)),
                              ("top_m", _top_m(2, 0.8), (2, 3)),
                              ("thurstone", _thurstone(0.6), (2, 3, 4))]
       for eps in (0.0, 0.3, 1.0)]
    + [_case(_adversarial(_luce(1.5, column=1), 0.3), (2, 4), True, id="adversarial-col1")]
    + [_case(_mixture([_luce(2.0, 0), _thurstone(0.5, 1), _luce(INF, 1)], (0.5, 0.3, 0.2)),
             (2, 4), True, id="mixture-luce-thurstone-best"),
       _case(_mixture([_top_m(2, 1.0, 0), _top_m(2, INF, 1)], (0.6, 0.4)), (2, 3), True,
             id="mixture-top_m"),
       _case(_mixture([_luce(0.5), _adversarial(_thurstone(0.4), 0.5)], (0.3, 0.7)), (2, 4),
             id="mixture-one-column")]
    + [_case(_sequential(_top_m(2, 0.7, 0), _luce(1.5, 1)), (2, 3, 4), True,
             id="sequential-top2-luce-cols"),
       _case(_sequential(_top_m(3, 1.2, 1), _luce(0.8, 0)), (4,), True,
             id="sequential-top3-luce-cols"),
       _case(_sequential(_top_m(2, 0.5, 0), _thurstone(0.6, 1)), (2, 3, 4), True,
             id="sequential-top2-thurstone-cols"),
       _case(_sequential(_top_m(3, 0.9), _thurstone(1.5)), (3, 4), id="sequential-top3-thurstone"),
       _case(_sequential(_top_m(2, 2.0), _luce(0.0)), (3, 4), id="sequential-second-uniform"),
       _case(_sequential(_top_m(1, 0.7), _luce(3.0)), (2, 4), id="sequential-top1")]
)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pair,ks,two_columns", EXACT_CASES)
def test_factor_matches_enumeration(x64, pair, ks, two_columns, seed):
    build, spec = pair
    p = np.random.default_rng(seed).dirichlet(np.ones(4))
    rewards = TABLE4 if two_columns else TABLE4[:, 0]
    curator = build()
    for k in ks:
        got = theory.curation_factor(jnp.asarray(p), jnp.asarray(rewards), k=k, curator=curator)
        assert got.dtype == jnp.float64
        want = ref.factor(spec, p, rewards, k)
        err = float(np.max(np.abs(np.asarray(got) - want)))
        assert err <= EXACT_TOL, f"k={k}: max abs error {err:.3g}"
        # the same factor, called on the curator directly (no argument checks on the way)
        direct = curator.factor(jnp.asarray(p), jnp.asarray(rewards).reshape(4, -1), k=k,
                                num_nodes=256)
        np.testing.assert_allclose(direct, got, rtol=0, atol=1e-13)


def test_adversarial_luce_k2_is_affine_in_eps(x64):
    """The docstring's closed form for k = 2: H_eps = (1 - 2 eps) H + 2 eps."""
    p = np.random.default_rng(2).dirichlet(np.ones(4))
    r = jnp.asarray(TABLE4[:, 0])
    h = theory.curation_factor(jnp.asarray(p), r, k=2, curator=cur.luce(1.7))
    for eps in (0.0, 0.25, 0.5, 1.0):
        got = theory.curation_factor(jnp.asarray(p), r, k=2,
                                     curator=cur.adversarial(cur.luce(1.7), eps))
        np.testing.assert_allclose(got, (1 - 2 * eps) * h + 2 * eps, rtol=0, atol=1e-13)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_top_fraction_factor_is_the_population_limit(x64, k):
    for seed in range(3):
        p = np.random.default_rng(seed).dirichlet(np.ones(4))
        for column, r in [(None, TABLE4[:, :1]), (0, TABLE4), (1, TABLE4)]:
            got = theory.curation_factor(jnp.asarray(p), jnp.asarray(r), k=k,
                                         curator=cur.top_fraction(column=column))
            want = ref.top_fraction_limit(p, r[:, 0 if column is None else column], k)
            # a closed form: only rounding separates the two
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
            np.testing.assert_allclose(np.sum(p * np.asarray(got)), 1.0, rtol=0, atol=1e-12)


def test_top_fraction_factor_on_level_boundaries(x64):
    """1/k exactly at the edge of a level: the levels below get nothing, not a rounding crumb."""
    p = jnp.array([0.5, 0.25, 0.125, 0.125])
    r = jnp.array([0.0, 1.0, 2.0, 2.0])
    curator = cur.top_fraction()
    for k, want in [(4, [0, 0, 4, 4]), (2, [0, 2, 2, 2])]:
        np.testing.assert_array_equal(theory.curation_factor(p, r, k=k, curator=curator), want)
        np.testing.assert_array_equal(ref.top_fraction_limit(p, r, k), want)


def test_top_fraction_k1_keeps_everything_and_k_inf_the_top_level(x64):
    p = jnp.asarray(np.random.default_rng(3).dirichlet(np.ones(4)))
    table = jnp.asarray(TABLE4)
    for column in (0, 1):
        curator = cur.top_fraction(column=column)
        np.testing.assert_array_equal(theory.curation_factor(p, table, k=1, curator=curator),
                                      np.ones(4))
        # the curator's own k = 1 branch, not only the shortcut of curation_factor
        np.testing.assert_allclose(curator.factor(p, table, k=1, num_nodes=64), np.ones(4),
                                   rtol=0, atol=1e-15)
        r = TABLE4[:, column]
        top = r == r.max()
        want = top / np.sum(np.asarray(p)[top])
        np.testing.assert_allclose(theory.curation_factor(p, table, k=INF, curator=curator), want,
                                   rtol=1e-14)
    # sampling with k = 1: every candidate is kept, in order
    out = sc.curate(jax.random.key(0), jnp.arange(12), jnp.arange(12.0) % 3, k=1,
                    curator=cur.top_fraction())
    np.testing.assert_array_equal(out.index, np.arange(12))
    np.testing.assert_array_equal(out.samples, np.arange(12))


# ------------------------------------------------------------------------------------------------
# 2. Normalisation in float32 on a larger instance
# ------------------------------------------------------------------------------------------------

NORM_CURATORS = [
    pytest.param(lambda: cur.luce(2.0, column=0), True, id="luce"),
    pytest.param(lambda: cur.luce(INF, column=1), True, id="luce-inf"),
    pytest.param(lambda: cur.top_m(3, 1.5, column=0), True, id="top_m"),
    pytest.param(lambda: cur.top_m(3, INF, column=1), True, id="top_m-inf"),
    pytest.param(lambda: cur.thurstone(0.4, column=0), True, id="thurstone"),
    pytest.param(lambda: cur.thurstone(0.0, column=1), True, id="thurstone-0"),
    pytest.param(lambda: cur.adversarial(cur.luce(3.0, column=0), 0.3), True, id="adversarial"),
    pytest.param(lambda: cur.mixture([cur.luce(1.0, column=0), cur.thurstone(0.7, column=1)],
                                     [0.25, 0.75]), True, id="mixture"),
    pytest.param(lambda: cur.sequential(cur.top_m(3, 1.0, column=0),
                                        cur.luce(2.0, column=1)), False, id="sequential-luce"),
    pytest.param(lambda: cur.sequential(cur.top_m(2, 0.8, column=1),
                                        cur.thurstone(0.5, column=0)), False,
                 id="sequential-thurstone"),
    pytest.param(lambda: cur.top_fraction(column=1), True, id="top_fraction"),
]


@pytest.mark.parametrize("build,k_inf", NORM_CURATORS)
def test_factor_is_normalised_in_float32(build, k_inf):
    rng = np.random.default_rng(5)
    p = jnp.asarray(rng.dirichlet(np.ones(50)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(50, 2)), jnp.float32)
    table = table.at[7].set(table[3])  # a tie in both columns
    curator = build()
    for k in [4] + ([INF] if k_inf else []):  # one K: each compiles the quadrature (~5 s)
        h = theory.curation_factor(p, table, k=k, curator=curator)
        assert h.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(h))) and bool(jnp.all(h >= 0))
        # 50 float32 terms: rounding ~1e-7; the quadratures are at float32 resolution
        total = float(jnp.sum(p * h))
        assert abs(total - 1.0) <= 1e-5, f"k={k}: sum p H = {total!r}"


# ------------------------------------------------------------------------------------------------
# 3. Samplers against the exact kept law (chi-square)
# ------------------------------------------------------------------------------------------------

P5 = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
# ties in column 0 (states 1, 2) and column 1 (states 1, 4)
TABLE5 = np.array([[0.0, 1.0], [0.5, 0.0], [0.5, 2.0], [1.0, 0.5], [2.0, 0.0]])
NUM_GROUPS = 20_000


def _chi2_pvalue(counts, probs):
    """Pearson chi-square p-value of counts against probabilities (zero-probability cells must
    have zero counts, which is asserted)."""
    counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
    on = probs > 0
    assert counts[~on].sum() == 0, "a zero-probability outcome was observed"
    if on.sum() == 1:
        return 1.0
    expected = probs[on] / probs[on].sum() * counts.sum()
    return stats.chisquare(counts[on], expected).pvalue


def _wald_pvalue(group_counts, mean):
    """Wald test that iid per-group count vectors ``(n, M)`` have expectation ``mean``.

    The m kept rows of one group are not independent draws (they are distinct candidates of one
    ranking), so Pearson's statistic on all n*m rows is not chi-square; the groups are iid, so
    ``T = n d' S^-1 d`` (d the mean difference, S the sample covariance of the group counts) is
    chi-square with (cells - 1) degrees of freedom as n grows (the counts of a group sum to m:
    one cell is dropped).
    """
    group_counts, mean = np.asarray(group_counts, np.float64), np.asarray(mean, np.float64)
    on = mean > 0
    assert group_counts[:, ~on].sum() == 0, "a zero-probability outcome was observed"
    x = group_counts[:, on][:, :-1]
    if x.shape[1] == 0:
        return 1.0
    d = x.mean(axis=0) - mean[on][:-1]
    s = np.atleast_2d(np.cov(x, rowvar=False))
    t = x.shape[0] * float(d @ np.linalg.solve(s, d))
    return stats.chi2.sf(t, x.shape[1])


# Most cases use K = 4 (M = 5, float32): each distinct K compiles the exact law's quadrature anew
# (~5 s for Luce and top-m); K = 2 and 3 are covered by Thurstone, sequential and top-fraction.
SAMPLER_CASES = [
    pytest.param(lambda: cur.luce(1.5), 4, False, id="luce"),
    pytest.param(lambda: cur.luce(INF), 4, False, id="luce-inf"),
    pytest.param(lambda: cur.luce(0.8, column=1), 4, True, id="luce-col1"),
    pytest.param(lambda: cur.top_m(2, 1.0), 4, False, id="top_m-2"),
    pytest.param(lambda: cur.top_m(2, INF), 4, False, id="top_m-2-inf"),
    pytest.param(lambda: cur.top_m(2, 0.7, column=1), 4, True, id="top_m-2-col1"),
    pytest.param(lambda: cur.thurstone(0.5), 4, False, id="thurstone"),
    pytest.param(lambda: cur.thurstone(0.0), 4, False, id="thurstone-0"),
    pytest.param(lambda: cur.thurstone(INF), 4, False, id="thurstone-inf"),
    pytest.param(lambda: cur.thurstone(1.0, column=1), 2, True, id="thurstone-col1"),
    pytest.param(lambda: cur.adversarial(cur.luce(2.0), 0.3), 4, False, id="adversarial-luce"),
    pytest.param(lambda: cur.adversarial(cur.top_m(2, 1.0), 0.5), 4, False,
                 id="adversarial-top_m"),
    pytest.param(lambda: cur.adversarial(cur.thurstone(0.0), 1.0), 2, False,
                 id="adversarial-worst"),
    pytest.param(lambda: cur.mixture([cur.luce(2.0, column=0), cur.thurstone(0.5, column=1)],
                                     [0.4, 0.6]), 4, True, id="mixture"),
    pytest.param(lambda: cur.mixture([cur.top_m(2, INF, column=0), cur.top_m(2, 0.5, column=1)],
                                     [0.5, 0.5]), 4, True, id="mixture-top_m"),
    pytest.param(lambda: cur.sequential(cur.top_m(2, 1.0, column=0), cur.luce(2.0, column=1)),
                 4, True, id="sequential-luce"),
    pytest.param(lambda: cur.sequential(cur.top_m(3, 0.5), cur.thurstone(0.7)), 4, False,
                 id="sequential-thurstone"),
    pytest.param(lambda: cur.sequential(cur.top_m(2, 0.8, column=1),
                                        cur.thurstone(0.5, column=0)), 3, True,
                 id="sequential-thurstone-cols"),
]


def _draw_candidates(key, k, n, two_columns):
    states = jax.random.choice(key, P5.shape[0], (n * k,), p=jnp.asarray(P5, jnp.float32))
    table = jnp.asarray(TABLE5 if two_columns else TABLE5[:, 0], jnp.float32)
    return states, table, table[states]


@pytest.mark.parametrize("build,k,two_columns", SAMPLER_CASES)
def test_sampler_follows_the_exact_law(build, k, two_columns):
    curator = build()
    n = NUM_GROUPS
    key_draw, key_curate = jax.random.split(jax.random.key(20))
    states, table, rewards = _draw_candidates(key_draw, k, n, two_columns)
    out = sc.curate(key_curate, states, rewards, k=k, curator=curator)
    m = curator.kept(k)
    assert out.samples.shape == (n * m,) and out.index.dtype == jnp.int32
    assert out.rewards.shape == (n * m,) + rewards.shape[1:]
    # rows: group by group, m distinct positions in [0, k), the kept rewards those of the samples
    index = np.asarray(out.index).reshape(n, m)
    assert np.all((index >= 0) & (index < k))
    assert np.all(np.diff(np.sort(index, axis=1), axis=1) > 0)
    rows = (np.arange(n)[:, None] * k + index).reshape(-1)
    np.testing.assert_array_equal(out.samples, np.asarray(states)[rows])
    np.testing.assert_array_equal(out.rewards, np.asarray(rewards)[rows])

    q = np.asarray(theory.curated(jnp.asarray(P5, jnp.float32), table, k=k, curator=curator),
                   np.float64)
    kept = np.asarray(out.samples).reshape(n, m)
    # One kept row per group, uniformly among the m (a NumPy draw independent of the curation):
    # iid draws from the law of one uniform kept sample, p H; Pearson at level ALPHA.
    pick = np.random.default_rng(21).integers(m, size=n)
    one = kept[np.arange(n), pick]
    counts = np.bincount(one, minlength=5)
    assert _chi2_pvalue(counts, q) > ALPHA
    if m > 1:
        # All m kept rows together: m times the law of one uniform kept sample (Wald, ALPHA).
        group_counts = (kept[:, :, None] == np.arange(5)[None, None, :]).sum(axis=1)
        np.testing.assert_array_equal(group_counts.sum(axis=1), m)
        assert _wald_pvalue(group_counts, m * q) > ALPHA
    if np.max(np.abs(q - P5)) > 0.03:
        # Power check: the same counts are firmly rejected against the uncurated law.
        assert _chi2_pvalue(counts, P5) < 1e-8


# top_fraction pools the groups: the finite-n law differs from the population limit of the theory
# (by O(1/n) inside a level, more when 1/k falls on the edge of a level). So the sampler is
# compared with the exact finite-n law, simulated in NumPy (tests/curator_reference.py), by
# per-state two-sample z-tests on the mean kept counts, Bonferroni-corrected over the M states
# (family-wise level ALPHA); and, at large n where 1/k falls well inside a level (the bias is then
# exponentially small), with the population limit, at a tolerance of Z_CRIT simulated standard
# deviations.
Z_CRIT = stats.norm.isf(ALPHA / (2 * len(P5)))


@pytest.mark.parametrize("k,column", [(3, 0), (2, 1)], ids=["inside-a-level", "level-edge"])
def test_top_fraction_sampler_matches_the_finite_n_law(k, column):
    n, reps = 40, 4000
    curator = cur.top_fraction(column=column)
    table = jnp.asarray(TABLE5, jnp.float32)

    @jax.jit
    def kept_counts(key):
        key_draw, key_curate = jax.random.split(key)
        states = jax.random.choice(key_draw, 5, (n * k,), p=jnp.asarray(P5, jnp.float32))
        out = sc.curate(key_curate, states, table[states], k=k, curator=curator)
        return jnp.sum(out.samples[:, None] == jnp.arange(5)[None, :], axis=0)

    got = np.asarray(jax.vmap(kept_counts)(jax.random.split(jax.random.key(30), reps)))
    np.testing.assert_array_equal(got.sum(axis=1), n)
    want = ref.top_fraction_counts(np.random.default_rng(31), P5, TABLE5[:, column], k, n, reps)
    se = np.sqrt(got.var(axis=0, ddof=1) / reps + want.var(axis=0, ddof=1) / reps)
    diff = got.mean(axis=0) - want.mean(axis=0)
    fixed = se == 0  # states never kept in either
    np.testing.assert_array_equal(diff[fixed], 0)
    z = np.abs(diff[~fixed]) / se[~fixed]
    assert np.all(z < Z_CRIT), f"z = {z}"


def test_top_fraction_sampler_large_n_matches_the_population_limit():
    n, k, reps = 20_000, 3, 2000
    table = jnp.asarray(TABLE5[:, 0], jnp.float32)  # 1/3 falls inside the level r = 0.5
    key_draw, key_curate = jax.random.split(jax.random.key(32))
    states, _, rewards = _draw_candidates(key_draw, k, n, False)
    out = sc.curate(key_curate, states, rewards, k=k, curator=cur.top_fraction())
    assert out.samples.shape == (n,)
    # the kept rows are the best n of the pool, in increasing row order
    rows = np.asarray(out.index)
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(out.samples, np.asarray(states)[rows])
    np.testing.assert_array_equal(np.sort(np.asarray(out.rewards)),
                                  np.sort(np.asarray(rewards))[-n:])
    counts = np.bincount(np.asarray(out.samples), minlength=5)
    limit = np.asarray(theory.curated(jnp.asarray(P5, jnp.float32), table, k=k,
                                      curator=cur.top_fraction()), np.float64)
    np.testing.assert_allclose(limit, ref.top_fraction_limit(P5, TABLE5[:, 0], k) * P5, atol=1e-6)
    sim = ref.top_fraction_counts(np.random.default_rng(33), P5, TABLE5[:, 0], k, n, reps)
    sd = sim.std(axis=0, ddof=1)
    never = limit == 0
    np.testing.assert_array_equal(counts[never], 0)
    np.testing.assert_array_equal(sim[:, never], 0)
    # The simulated finite-n mean is the population limit here (the bias is exponentially small;
    # its standard error is sd / sqrt(reps)).
    assert np.all(np.abs(sim.mean(axis=0) - n * limit)[~never]
                  < Z_CRIT * sd[~never] / math.sqrt(reps))
    # One run of the sampler, within Z_CRIT standard deviations (sd estimated from 2000
    # replicates, relative error ~2%, absorbed by the 10% margin).
    assert np.all(np.abs(counts - n * limit)[~never] < 1.1 * Z_CRIT * sd[~never])


# ------------------------------------------------------------------------------------------------
# 4. Pytree structure: rates are leaves, options are static
# ------------------------------------------------------------------------------------------------


def _leaves(c):
    return [float(x) if np.ndim(x) == 0 else np.asarray(x).tolist()
            for x in jax.tree_util.tree_leaves(c)]


def _treedef(c):
    return jax.tree_util.tree_structure(c)


def test_rates_are_leaves_and_options_are_static():
    assert _leaves(cur.luce(2.0, column=1)) == [2.0]
    assert _leaves(cur.top_m(3, 0.5, column=0)) == [0.5]
    assert _leaves(cur.thurstone(0.25)) == [0.25]
    assert _leaves(cur.adversarial(cur.luce(2.0), 0.25)) == [2.0, 0.25]
    assert _leaves(cur.mixture([cur.luce(2.0), cur.thurstone(0.5)], [0.25, 0.75])) == [
        2.0, 0.5, [0.25, 0.75]]
    assert _leaves(cur.sequential(cur.top_m(2, 0.5), cur.thurstone(1.5))) == [0.5, 1.5]
    assert _leaves(cur.top_fraction(column=1)) == []
    # static options live in the treedef
    assert _treedef(cur.top_m(2, 1.0)) != _treedef(cur.top_m(3, 1.0))
    assert _treedef(cur.top_m(2, 1.0)) == _treedef(cur.top_m(2, 7.0))
    assert _treedef(cur.luce(1.0)) != _treedef(cur.luce(1.0, column=0))
    assert _treedef(cur.luce(1.0, column=0)) != _treedef(cur.luce(1.0, column=1))
    assert _treedef(cur.thurstone(1.0, column=1)) == _treedef(cur.thurstone(3.0, column=1))
    assert _treedef(cur.top_fraction()) != _treedef(cur.top_fraction(column=0))
    mix = cur.mixture([cur.luce(1.0), cur.thurstone(1.0)], [0.5, 0.5])
    assert _treedef(mix) == _treedef(cur.mixture([cur.luce(3.0), cur.thurstone(0.1)], [0.1, 0.9]))
    assert _treedef(mix) != _treedef(cur.mixture([cur.luce(1.0, column=1), cur.thurstone(1.0)],
                                                  [0.5, 0.5]))
    assert _treedef(cur.adversarial(cur.top_m(2, 1.0), 0.1)) != _treedef(
        cur.adversarial(cur.top_m(3, 1.0), 0.1))
    # a curator rebuilt from new leaves is the curator with those rates
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, cur.adversarial(cur.luce(1.5), 0.25))
    assert doubled == cur.adversarial(cur.luce(3.0), 0.5)


# (build, rates, k, two columns, also vmap the exact factor). vmap of the exact factor compiles
# a batched program; the Plackett-Luce quadrature costs ~5 s to compile, so the factor is vmapped
# for the cheaper families only (the rates enter every factor the same way, as traced leaves).
VMAP_CASES = [
    pytest.param(lambda b: cur.luce(b), [0.0, 0.7, 3.0, INF], 4, False, False, id="luce"),
    pytest.param(lambda b: cur.top_m(2, b), [0.0, 0.7, 3.0, INF], 4, False, False, id="top_m"),
    pytest.param(lambda s: cur.thurstone(s), [0.0, 0.5, 2.0, INF], 4, False, True,
                 id="thurstone"),
    pytest.param(lambda e: cur.adversarial(cur.luce(2.0), e), [0.0, 0.3, 1.0], 4, False, False,
                 id="adversarial-luce"),
    pytest.param(lambda e: cur.adversarial(cur.thurstone(0.5), e), [0.0, 0.3, 1.0], 4, False,
                 True, id="adversarial-thurstone"),
    pytest.param(lambda w: cur.mixture([cur.luce(2.0, column=0), cur.thurstone(0.5, column=1)], w),
                 [[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]], 4, True, False, id="mixture"),
    pytest.param(lambda w: cur.mixture([cur.thurstone(0.3, column=0),
                                        cur.thurstone(1.0, column=1)], w),
                 [[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]], 4, True, True, id="mixture-thurstone"),
    pytest.param(lambda b: cur.sequential(cur.top_m(2, b, column=0), cur.luce(1.0, column=1)),
                 [0.5, 1.0, 4.0], 4, True, False, id="sequential"),
]


@pytest.mark.parametrize("build,rates,k,two_columns,with_factor", VMAP_CASES)
def test_vmap_over_rates_and_one_compile_across_rates(build, rates, k, two_columns, with_factor):
    key_draw, key_curate = jax.random.split(jax.random.key(40))
    states, table, rewards = _draw_candidates(key_draw, k, 64, two_columns)
    rates = jnp.asarray(rates, jnp.float32)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def kept(key, curator):  # the curator passed in: rates are leaves, options are static
        return sc.curate(key, states, rewards, k=k, curator=curator).index

    @jax.jit
    def batched(key, rates):  # the curator built inside the vmapped function from a traced rate
        return jax.vmap(lambda rate: sc.curate(key, states, rewards, k=k,
                                               curator=build(rate)).index)(rates)

    got = batched(key_curate, rates)
    assert got.shape[0] == rates.shape[0]
    for i, rate in enumerate(rates):
        # compiles once for all the rates (assert_max_traces), and draws what the batch drew
        np.testing.assert_array_equal(got[i], kept(key_curate, build(np.asarray(rate).tolist())))
    if with_factor:
        p = jnp.asarray(P5, jnp.float32)

        def factor(rate):
            return theory.curation_factor(p, table, k=k, curator=build(rate))

        factors = jax.jit(jax.vmap(factor))(rates)
        for i, rate in enumerate(rates):
            np.testing.assert_allclose(factors[i], factor(np.asarray(rate).tolist()), rtol=2e-6,
                                       atol=1e-6)


def test_static_options_retrace():
    traces = []
    states = jnp.arange(24)

    @jax.jit
    def kept(curator):
        traces.append(None)
        return sc.curate(jax.random.key(0), states, jnp.linspace(0.0, 1.0, 24), k=4,
                         curator=curator).samples

    assert kept(cur.top_m(2, 1.0)).shape == (12,)
    assert kept(cur.top_m(2, 5.0)).shape == (12,)
    assert len(traces) == 1
    assert kept(cur.top_m(3, 1.0)).shape == (18,)
    assert len(traces) == 2


# ------------------------------------------------------------------------------------------------
# 5. Argument errors: each names the argument
# ------------------------------------------------------------------------------------------------

KEY = jax.random.key(0)
X12 = jnp.arange(12)
R12 = jnp.linspace(0.0, 1.0, 12)
R12x2 = jnp.stack([R12, R12[::-1]], axis=1)
P3 = jnp.array([0.2, 0.3, 0.5])
T3 = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.5]])


ERROR_CASES = [
    # factories: rates out of range
    (lambda: cur.luce(-1.0), r"`beta` must be >= 0.*got -1.0"),
    (lambda: cur.luce(jnp.nan), r"`beta` must be >= 0.*got nan"),
    (lambda: cur.luce(jnp.ones(2)), r"`beta` must be a scalar"),
    (lambda: cur.top_m(2, -0.5), r"`beta` must be >= 0.*got -0.5"),
    (lambda: cur.top_m(0), r"`m` must be >= 1; got 0"),
    (lambda: cur.top_m(1.5), r"`m` must be an integer"),
    (lambda: cur.thurstone(-0.1), r"`sigma` must be >= 0.*got -0.1"),
    (lambda: cur.adversarial(cur.luce(), 1.5), r"`eps` must be in \[0, 1\]; got 1.5"),
    (lambda: cur.adversarial(cur.luce(), -0.1), r"`eps` must be in \[0, 1\]; got -0.1"),
    (lambda: cur.adversarial(cur.luce(), jnp.nan), r"`eps` must be in \[0, 1\]; got nan"),
    (lambda: cur.adversarial("luce", 0.5), r"`base` must be a curator"),
    (lambda: cur.adversarial(cur.top_fraction(), 0.5), r"`base` must judge each group"),
    (lambda: cur.mixture([cur.luce(), cur.luce(2.0)], [0.5, 0.6]),
     r"`weights` must be non-negative and sum to 1"),
    (lambda: cur.mixture([cur.luce(), cur.luce(2.0)], [1.5, -0.5]),
     r"`weights` must be non-negative and sum to 1"),
    (lambda: cur.mixture([cur.luce(), cur.luce(2.0)], [1.0, 0.0, 0.0]),
     r"`weights` must have shape \(2,\).*got shape \(3,\)"),
    (lambda: cur.mixture([cur.luce(), cur.luce(2.0)], [[0.5, 0.5]]),
     r"`weights` must have shape \(2,\)"),
    (lambda: cur.mixture([], []), r"`components` must hold at least one curator"),
    (lambda: cur.mixture([cur.luce(), cur.top_fraction()], [0.5, 0.5]),
     r"`components\[1\]` must judge each group"),
    (lambda: cur.sequential(cur.top_m(2), 3), r"`second` must be a curator"),
    (lambda: cur.luce(column=-1), r"`column` must be None or an integer >= 0"),
    (lambda: cur.thurstone(column=1.0), r"`column` must be None or an integer >= 0"),
    (lambda: cur.top_fraction(column=True), r"`column` must be None or an integer >= 0"),
    # curate
    (lambda: sc.curate(KEY, X12, R12, k=4, curator=cur.top_m(5)), r"`m`=5.*must be <= k=4"),
    (lambda: sc.curate(KEY, X12, R12, k=3,
                       curator=cur.adversarial(cur.top_m(4), 0.5)), r"`m`=4.*must be <= k=3"),
    (lambda: sc.curate(KEY, X12, R12x2, k=4, curator=cur.luce(column=2)),
     r"`column` must be in \[0, 1\].*got 2"),
    (lambda: sc.curate(KEY, X12, R12x2, k=4,
                       curator=cur.mixture([cur.luce(column=0), cur.thurstone(column=3)],
                                           [0.5, 0.5])),
     r"`column` must be in \[0, 1\].*got 3"),
    (lambda: sc.curate(KEY, X12, R12x2, k=4, curator=cur.luce()),
     r"`column` must say.*column=None"),
    (lambda: sc.curate(KEY, X12, R12x2, k=4, curator=cur.top_fraction()),
     r"`column` must say.*column=None"),
    (lambda: sc.curate(KEY, X12, R12, k=4, beta=2.0, curator=cur.luce(2.0)),
     r"`beta` must be left at its default with a curator.*beta=2.0"),
    (lambda: sc.curate(KEY, X12, R12, k=4, num_candidates=2, curator=cur.top_m(1)),
     r"`num_candidates` applies to the luce curator only"),
    (lambda: sc.curate(KEY, X12, R12, k=4, num_candidates=5, curator=cur.luce()),
     r"`num_candidates` must be in \[1, 4\]; got 5"),
    (lambda: sc.curate(KEY, X12, R12, k=4, curator="luce"), r"`curator` must be a selfconsume"),
    (lambda: sc.curate(KEY, X12, R12, k=4,
                       curator=cur.mixture([cur.top_m(2), cur.luce()], [0.5, 0.5])),
     r"components of a mixture must keep as many rows"),
    (lambda: sc.curate(KEY, X12, R12, k=4, curator=cur.sequential(cur.top_m(3), cur.top_m(2))),
     r"`second` stage of a sequential curator must keep 1"),
    # theory
    (lambda: theory.curation_factor(P3, T3[:, 0], k=4, curator=cur.top_m(5)),
     r"`m`=5.*must be <= k=4"),
    (lambda: theory.curation_factor(P3, T3, k=2, curator=cur.luce(column=2)),
     r"`column` must be in \[0, 1\].*got 2"),
    (lambda: theory.curation_factor(P3, T3, k=2, curator=cur.thurstone()),
     r"`column` must say.*column=None"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=2, beta=0.5, curator=cur.luce(0.5)),
     r"`beta` must be left at its default with a curator.*beta=0.5"),
    (lambda: theory.retrain_map(P3, T3[:, 0], k=2, beta=3.0, curator=cur.top_m(1)),
     r"`beta` must be left at its default"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=INF,
                                    curator=cur.sequential(cur.top_m(2), cur.luce())),
     r"sequential curator needs a finite `k`"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=3,
                                    curator=cur.sequential(cur.top_m(2, INF), cur.luce())),
     r"needs random utilities in both stages.*`beta`"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=3,
                                    curator=cur.sequential(cur.top_m(2), cur.thurstone(0.0))),
     r"needs random utilities in both stages.*`sigma > 0`"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=3,
                                    curator=cur.sequential(cur.adversarial(cur.top_m(2), 0.5),
                                                           cur.luce())),
     r"implemented for a Plackett.Luce `first` stage"),
    (lambda: theory.curation_factor(P3, T3[:, 0], k=3,
                                    curator=cur.sequential(cur.top_m(2), cur.top_m(1))),
     r"implemented for a `second` stage that is luce or thurstone"),
    # get
    (lambda: cur.get("nope"),
     r"unknown curator name 'nope'.*'adversarial'.*'luce'.*'mixture'.*'sequential'.*'thurstone'"
     r".*'top_fraction'.*'top_m'"),
    (lambda: cur.get("luce", bogus=1.0), r"invalid options for curator 'luce'.*bogus"),
    (lambda: cur.get("luce", beta=-2.0), r"`beta` must be >= 0"),
    (lambda: cur.get("adversarial", base={"beta": 2.0}, eps=0.5),
     r"`base` must be a curator or a dict with a 'name'"),
    (lambda: cur.get("adversarial", base={"name": "luce", "beta": -1.0}, eps=0.5),
     r"`beta` must be >= 0"),
    (lambda: cur.get("adversarial", base={"name": "lucy"}, eps=0.5),
     r"unknown curator name 'lucy'"),
    (lambda: cur.get("mixture", components=[{"name": "luce"}, 3], weights=[0.5, 0.5]),
     r"`components\[1\]` must be a curator or a dict with a 'name'"),
    (lambda: cur.get("sequential", first={"name": "top_m", "m": 0}, second={"name": "luce"}),
     r"`m` must be >= 1"),
]


@pytest.mark.parametrize("call,match", ERROR_CASES)
def test_argument_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_equality_sees_the_types_of_nested_curators():
    assert cur.adversarial(cur.luce(1.0), 0.5) != cur.adversarial(cur.thurstone(1.0), 0.5)
    assert cur.mixture([cur.luce(1.0), cur.thurstone(1.0)], [0.5, 0.5]) != cur.mixture(
        [cur.thurstone(1.0), cur.luce(1.0)], [0.5, 0.5])
    assert cur.sequential(cur.top_m(2), cur.luce(1.0)) != cur.sequential(cur.top_m(2),
                                                                         cur.thurstone(1.0))
