"""One rule for values only known at run time (``selfconsume._checks``).

* A value problem in a **concrete** argument raises ``ValueError`` naming the argument.
* The same value **traced** (under ``jit``, ``vmap`` or ``scan``) makes every floating leaf of the
  result NaN, never a plausible-looking answer; integer leaves (kept indices, integer samples)
  stay as drawn.
* Valid traced values give exactly the eager result (the check adds a select, no arithmetic).
* Under ``vmap`` only the rows with an invalid value are poisoned.

``CASES`` is the table: each row is a one-argument function (the argument is the value under
test, everything else fixed and valid), a bad value, and the argument name the concrete error
must contain.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import curators
from selfconsume import _checks, metrics, theory

KEY = jax.random.key(0)
M = 5
P = jnp.array([0.1, 0.2, 0.3, 0.25, 0.15], jnp.float32)
Q = jnp.array([0.3, 0.1, 0.2, 0.2, 0.2], jnp.float32)
R = jnp.array([0.0, 0.5, 1.0, 1.0, 2.0], jnp.float32)
NOT_SUMMING = np.array([0.3, 0.3, 0.3, 0.3, 0.3], np.float32)  # sums to 1.5
NEGATIVE = np.array([-0.1, 0.3, 0.3, 0.3, 0.2], np.float32)  # sums to 1
WITH_NAN = np.array([np.nan, 0.25, 0.25, 0.25, 0.25], np.float32)
NAN_REWARDS = np.array([0.0, np.nan, 1.0, 1.0, 2.0], np.float32)
INF_REWARDS = np.array([0.0, 0.5, 1.0, 1.0, np.inf], np.float32)

K, GROUPS = 4, 3
FLOAT_SAMPLES = jnp.arange(GROUPS * K * 2, dtype=jnp.float32).reshape(GROUPS * K, 2)
INT_SAMPLES = jnp.arange(GROUPS * K, dtype=jnp.int32)
CANDIDATE_REWARDS = jnp.linspace(-1.0, 1.0, GROUPS * K, dtype=jnp.float32)
X = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(6, 2)
Y = X[::-1] + 0.5


def _f32(value):
    return np.float32(value)


# (id, function of the value under test, bad value, argument named by the concrete error)
CASES = [
    # theory: probability vectors
    ("curation_factor-p-sum", lambda p: theory.curation_factor(p, R, k=3), NOT_SUMMING, "p"),
    ("curation_factor-p-negative", lambda p: theory.curation_factor(p, R, k=3), NEGATIVE, "p"),
    ("curation_factor-p-nan", lambda p: theory.curation_factor(p, R, k=3), WITH_NAN, "p"),
    ("curation_factor-p-k1", lambda p: theory.curation_factor(p, R, k=1), NOT_SUMMING, "p"),
    ("curation_factor-p-kinf", lambda p: theory.curation_factor(p, R, k=math.inf), NOT_SUMMING,
     "p"),
    ("curation_factor-p-beta-inf", lambda p: theory.curation_factor(p, R, k=3, beta=math.inf),
     NOT_SUMMING, "p"),
    ("curated-p-sum", lambda p: theory.curated(p, R, k=2), NOT_SUMMING, "p"),
    ("curated-p-negative", lambda p: theory.curated(p, R, k=2), NEGATIVE, "p"),
    ("quadrature_step-p", lambda p: theory.quadrature_step(p, R, k=3), NOT_SUMMING, "p"),
    ("retrain_map-p", lambda p: theory.retrain_map(p, R, k=2, p_data=Q, real_fraction=0.5),
     NOT_SUMMING, "p"),
    ("retrain_map-p_data", lambda q: theory.retrain_map(P, R, k=2, p_data=q, real_fraction=0.5),
     NEGATIVE, "p_data"),
    ("trajectory-p0", lambda p: theory.trajectory(p, R, num_generations=3, k=2), NOT_SUMMING,
     "p0"),
    ("trajectory-p_data", lambda q: theory.trajectory(P, R, num_generations=3, k=2, p_data=q,
                                                      real_fraction=0.3), WITH_NAN, "p_data"),
    ("limit-p0", lambda p: theory.limit(p, R), NOT_SUMMING, "p0"),
    ("fixed_point-p_data", lambda q: theory.fixed_point(q, R, k=3, real_fraction=0.5),
     NOT_SUMMING, "p_data"),
    ("fixed_point-p_data-kinf", lambda q: theory.fixed_point(q, R, k=math.inf, real_fraction=0.5),
     NEGATIVE, "p_data"),
    ("reward_gain_bound-p", lambda p: theory.reward_gain_bound(p, R, k=3), NOT_SUMMING, "p"),
    # theory: rewards
    ("curation_factor-rewards-nan", lambda r: theory.curation_factor(P, r, k=3), NAN_REWARDS,
     "rewards"),
    ("curation_factor-rewards-inf", lambda r: theory.curation_factor(P, r, k=3), INF_REWARDS,
     "rewards"),
    ("curated-rewards-nan-kinf", lambda r: theory.curated(P, r, k=math.inf), NAN_REWARDS,
     "rewards"),
    ("trajectory-rewards-nan", lambda r: theory.trajectory(P, r, num_generations=2, k=2),
     NAN_REWARDS, "rewards"),
    ("limit-rewards-nan", lambda r: theory.limit(P, r), NAN_REWARDS, "rewards"),
    ("fixed_point-rewards-nan", lambda r: theory.fixed_point(P, r, k=2, real_fraction=0.5),
     NAN_REWARDS, "rewards"),
    ("reward_gain_bound-rewards-nan", lambda r: theory.reward_gain_bound(P, r, k=2), NAN_REWARDS,
     "rewards"),
    # theory: beta
    ("curation_factor-beta-negative", lambda b: theory.curation_factor(P, R, k=3, beta=b),
     _f32(-0.5), "beta"),
    ("curation_factor-beta-nan", lambda b: theory.curation_factor(P, R, k=3, beta=b),
     _f32(np.nan), "beta"),
    ("curation_factor-beta-k1", lambda b: theory.curation_factor(P, R, k=1, beta=b), _f32(-1.0),
     "beta"),
    ("curation_factor-beta-kinf", lambda b: theory.curation_factor(P, R, k=math.inf, beta=b),
     _f32(-1.0), "beta"),
    ("curated-beta-negative", lambda b: theory.curated(P, R, k=2, beta=b), _f32(-1.0), "beta"),
    ("quadrature_step-beta", lambda b: theory.quadrature_step(P, R, k=3, beta=b), _f32(-1.0),
     "beta"),
    ("retrain_map-beta", lambda b: theory.retrain_map(P, R, k=2, beta=b), _f32(-2.0), "beta"),
    ("trajectory-beta", lambda b: theory.trajectory(P, R, num_generations=3, k=2, beta=b),
     _f32(-1.0), "beta"),
    ("fixed_point-beta", lambda b: theory.fixed_point(P, R, k=2, beta=b, real_fraction=0.5),
     _f32(-1.0), "beta"),
    ("fixed_point-beta-kinf", lambda b: theory.fixed_point(P, R, k=math.inf, beta=b,
                                                           real_fraction=0.5), _f32(np.nan),
     "beta"),
    ("reward_gain_bound-beta", lambda b: theory.reward_gain_bound(P, R, k=2, beta=b), _f32(-1.0),
     "beta"),
    # theory: real_fraction and the conversions
    ("retrain_map-real_fraction-above", lambda a: theory.retrain_map(P, R, k=2, p_data=Q,
                                                                     real_fraction=a),
     _f32(1.5), "real_fraction"),
    ("retrain_map-real_fraction-negative", lambda a: theory.retrain_map(P, R, k=2, p_data=Q,
                                                                        real_fraction=a),
     _f32(-0.1), "real_fraction"),
    ("retrain_map-real_fraction-nan", lambda a: theory.retrain_map(P, R, k=2, p_data=Q,
                                                                   real_fraction=a),
     _f32(np.nan), "real_fraction"),
    ("trajectory-real_fraction", lambda a: theory.trajectory(P, R, num_generations=3, k=2,
                                                             p_data=Q, real_fraction=a),
     _f32(1.5), "real_fraction"),
    ("fixed_point-real_fraction-zero", lambda a: theory.fixed_point(Q, R, k=2, real_fraction=a),
     _f32(0.0), "real_fraction"),
    ("fixed_point-real_fraction-zero-kinf", lambda a: theory.fixed_point(Q, R, k=math.inf,
                                                                         real_fraction=a),
     _f32(0.0), "real_fraction"),
    ("fixed_point-real_fraction-above", lambda a: theory.fixed_point(Q, R, k=2, real_fraction=a),
     _f32(1.5), "real_fraction"),
    ("real_fraction_from_lambda", theory.real_fraction_from_lambda, _f32(-0.5), "lam"),
    ("lambda_from_real_fraction", theory.lambda_from_real_fraction, _f32(1.5), "real_fraction"),
    # curation
    ("choice_probabilities-beta", lambda b: sc.choice_probabilities(R, beta=b), _f32(-1.0),
     "beta"),
    ("choice_probabilities-beta-nan", lambda b: sc.choice_probabilities(R, beta=b), _f32(np.nan),
     "beta"),
    ("curate-beta-float-samples", lambda b: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=K,
                                                      beta=b), _f32(-1.0), "beta"),
    ("curate-beta-nan", lambda b: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=K, beta=b),
     _f32(np.nan), "beta"),
    ("curate-beta-int-samples", lambda b: sc.curate(KEY, INT_SAMPLES, CANDIDATE_REWARDS, k=K,
                                                    beta=b), _f32(-1.0), "beta"),
    ("curate-beta-k1", lambda b: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=1, beta=b),
     _f32(-1.0), "beta"),
    ("curate-num_candidates-zero", lambda n: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS,
                                                       k=K, num_candidates=n),
     np.int32(0), "num_candidates"),
    ("curate-num_candidates-above-k", lambda n: sc.curate(KEY, INT_SAMPLES, CANDIDATE_REWARDS,
                                                          k=K, num_candidates=n),
     np.int32(K + 1), "num_candidates"),
    # metrics
    ("kl_divergence-p", lambda p: metrics.kl_divergence(p, Q), NOT_SUMMING, "p"),
    ("kl_divergence-q", lambda q: metrics.kl_divergence(P, q), NEGATIVE, "q"),
    ("total_variation-q", lambda q: metrics.total_variation(P, q), NOT_SUMMING, "q"),
    ("total_variation-p-nan", lambda p: metrics.total_variation(p, Q), WITH_NAN, "p"),
    ("entropy-p", metrics.entropy, NOT_SUMMING, "p"),
    ("entropy-p-negative", metrics.entropy, NEGATIVE, "p"),
    ("expected_reward-p", lambda p: metrics.expected_reward(p, R), NOT_SUMMING, "p"),
    ("mmd_rbf-bandwidth", lambda h: metrics.mmd_rbf(X, Y, bandwidth=h), _f32(-1.0), "bandwidth"),
]


def _floating_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]


def test_case_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("fn,bad,name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_traced_value_poisons_and_concrete_value_raises(fn, bad, name):
    out = jax.jit(fn)(bad)
    leaves = _floating_leaves(out)
    assert leaves, "the output has a floating leaf"
    for leaf in leaves:
        assert np.all(np.isnan(np.asarray(leaf))), f"not poisoned: {leaf}"
    with pytest.raises(ValueError, match=f"`{name}`"):
        fn(bad)


def test_curate_poison_keeps_integer_leaves():
    """Integer samples and the kept index are left as drawn (valid indices into the groups)."""
    kept = jax.jit(lambda b: sc.curate(KEY, INT_SAMPLES, CANDIDATE_REWARDS, k=K, beta=b))(-1.0)
    assert kept.samples.dtype == jnp.int32 and kept.index.dtype == jnp.int32
    index = np.asarray(kept.index)
    assert np.all((index >= 0) & (index < K))
    np.testing.assert_array_equal(kept.samples, np.arange(GROUPS) * K + index)
    assert np.all(np.isnan(kept.rewards))


# ------------------------------------------------------------------------------------------------
# Valid traced values: exactly the eager results


# (id, function of (p, rewards, beta), jit == eager bit for bit). Where it is False, XLA fuses
# a few float32 multiply-adds under jit (a * p_data + (1 - a) * q, the variance's p * (w - m)^2)
# into FMAs that the eager op-by-op path rounds separately: the two differ by at most 2 ulp, as
# they did before the traced checks existed; test_the_check_changes_no_valid_result_under_jit
# shows the checks themselves change nothing.
VALID = [
    ("curation_factor", lambda p, r, b: theory.curation_factor(p, r, k=3, beta=b), True),
    ("curation_factor-kinf", lambda p, r, b: theory.curation_factor(p, r, k=math.inf, beta=b),
     True),
    ("curation_factor-beta-inf",
     lambda p, r, b: theory.curation_factor(p, r, k=3, beta=b * jnp.inf), True),
    ("curated", lambda p, r, b: theory.curated(p, r, k=2, beta=b), True),
    ("quadrature_step", lambda p, r, b: theory.quadrature_step(p, r, k=3, beta=b), True),
    ("retrain_map", lambda p, r, b: theory.retrain_map(p, r, k=2, beta=b, p_data=Q,
                                                       real_fraction=0.25), False),
    ("trajectory", lambda p, r, b: theory.trajectory(p, r, num_generations=4, k=3, beta=b,
                                                     p_data=Q, real_fraction=0.25), True),
    ("limit", lambda p, r, b: theory.limit(p, r), True),
    ("fixed_point", lambda p, r, b: theory.fixed_point(p, r, k=2, beta=b, real_fraction=0.5),
     True),
    ("fixed_point-kinf", lambda p, r, b: theory.fixed_point(p, r, k=math.inf, beta=b,
                                                            real_fraction=0.5), True),
    ("reward_gain_bound", lambda p, r, b: theory.reward_gain_bound(p, r, k=3, beta=b), False),
    ("real_fraction_from_lambda", lambda p, r, b: theory.real_fraction_from_lambda(b * p), True),
    ("lambda_from_real_fraction", lambda p, r, b: theory.lambda_from_real_fraction(p), True),
    ("choice_probabilities", lambda p, r, b: sc.choice_probabilities(r, beta=b), True),
    ("curate", lambda p, r, b: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=K, beta=b,
                                         num_candidates=jnp.int32(3)), True),
    ("kl_divergence", lambda p, r, b: metrics.kl_divergence(p, Q), True),
    ("total_variation", lambda p, r, b: metrics.total_variation(p, Q), True),
    ("entropy", lambda p, r, b: metrics.entropy(p), True),
    ("expected_reward", lambda p, r, b: metrics.expected_reward(p, r), True),
]
ARGS = (P, R, jnp.float32(1.5))


@pytest.mark.parametrize("fn,exact", [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_traced_values_give_the_eager_result(fn, exact):
    eager = fn(*ARGS)
    traced = jax.jit(fn)(*ARGS)
    for e, t in zip(jax.tree.leaves(eager), jax.tree.leaves(traced), strict=True):
        e, t = np.asarray(e), np.asarray(t)
        assert np.all(np.isfinite(e.astype(np.float64)))
        if exact or not np.issubdtype(e.dtype, np.inexact):
            np.testing.assert_array_equal(t, e)
        else:
            np.testing.assert_array_max_ulp(t, e, maxulp=2)


@pytest.mark.parametrize("fn", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_the_check_changes_no_valid_result_under_jit(fn, monkeypatch):
    """The same program with the poisoning switched off gives the same bits."""
    checked = jax.jit(lambda *a: fn(*a))(*ARGS)
    monkeypatch.setattr(_checks, "poison", lambda ok, tree: tree)
    unchecked = jax.jit(lambda *a: fn(*a))(*ARGS)
    for c, u in zip(jax.tree.leaves(checked), jax.tree.leaves(unchecked), strict=True):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(u))


def test_conversions_of_valid_traced_values_are_unchanged():
    lam = jnp.array([0.0, 1.0, 3.0, jnp.inf])
    a = jnp.array([1.0, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(jax.jit(theory.real_fraction_from_lambda)(lam),
                                  theory.real_fraction_from_lambda(lam))
    np.testing.assert_array_equal(jax.jit(theory.lambda_from_real_fraction)(a),
                                  theory.lambda_from_real_fraction(a))


def test_conversions_poison_only_the_invalid_entries():
    out = np.asarray(jax.jit(theory.real_fraction_from_lambda)(jnp.array([1.0, -0.5, jnp.nan])))
    assert out[0] == 0.5 and np.all(np.isnan(out[1:]))
    out = np.asarray(jax.jit(theory.lambda_from_real_fraction)(jnp.array([0.5, 1.5, -0.1])))
    assert out[0] == 1.0 and np.all(np.isnan(out[1:]))
    with pytest.raises(ValueError, match=r"`lam` must be >= 0.*-0.5.*1 invalid"):
        theory.real_fraction_from_lambda(np.array([1.0, -0.5]))


# ------------------------------------------------------------------------------------------------
# vmap and scan: only the invalid rows are poisoned


def _assert_only_row_poisoned(batched, reference, bad_row):
    for b, r in zip(jax.tree.leaves(batched), jax.tree.leaves(reference)):
        b, r = np.asarray(b), np.asarray(r)
        if not np.issubdtype(b.dtype, np.inexact):
            continue
        assert np.all(np.isnan(b[bad_row]))
        keep = np.arange(b.shape[0]) != bad_row
        assert np.all(np.isfinite(b[keep]))
        np.testing.assert_array_equal(b[keep], r[keep])


VMAPPED = [
    ("curated-beta", lambda b: theory.curated(P, R, k=3, beta=b),
     jnp.array([1.0, -1.0, 2.0, 0.5]), jnp.array([1.0, 1.0, 2.0, 0.5])),
    ("trajectory-real_fraction", lambda a: theory.trajectory(P, R, num_generations=3, k=2,
                                                             p_data=Q, real_fraction=a),
     jnp.array([0.1, 0.5, 1.2, 0.0]), jnp.array([0.1, 0.5, 0.9, 0.0])),
    ("retrain_map-p", lambda p: theory.retrain_map(p, R, k=2, p_data=Q, real_fraction=0.3),
     jnp.stack([P, Q, jnp.asarray(NOT_SUMMING), P]), jnp.stack([P, Q, Q, P])),
    ("fixed_point-real_fraction", lambda a: theory.fixed_point(Q, R, k=math.inf,
                                                               real_fraction=a),
     jnp.array([0.2, 0.0, 0.7]), jnp.array([0.2, 0.4, 0.7])),
    ("kl_divergence-p", lambda p: metrics.kl_divergence(p, Q),
     jnp.stack([P, jnp.asarray(NEGATIVE), Q]), jnp.stack([P, P, Q])),
    ("entropy-p", metrics.entropy, jnp.stack([P, Q, jnp.asarray(WITH_NAN)]), jnp.stack([P, Q, Q])),
    ("curate-beta", lambda b: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=K, beta=b),
     jnp.array([1.0, jnp.nan, 3.0]), jnp.array([1.0, 2.0, 3.0])),
    ("curate-num_candidates", lambda n: sc.curate(KEY, FLOAT_SAMPLES, CANDIDATE_REWARDS, k=K,
                                                  num_candidates=n),
     jnp.array([1, 2, 0, 4], jnp.int32), jnp.array([1, 2, 3, 4], jnp.int32)),
]


@pytest.mark.parametrize("fn,batch,valid_batch", [v[1:] for v in VMAPPED],
                         ids=[v[0] for v in VMAPPED])
def test_vmap_poisons_only_the_invalid_row(fn, batch, valid_batch):
    """The batch differs from an all-valid one in one row: that row is NaN, the others are the
    all-valid batch's rows bit for bit."""
    bad_row = int(np.flatnonzero(np.any(np.asarray(batch != valid_batch).reshape(
        batch.shape[0], -1), axis=1))[0])
    vmapped = jax.jit(jax.vmap(fn))
    _assert_only_row_poisoned(vmapped(batch), vmapped(valid_batch), bad_row)


def test_scan_poisons_only_the_invalid_step():
    def step(carry, beta):
        return carry, theory.curated(P, R, k=2, beta=beta)

    run = jax.jit(lambda betas: jax.lax.scan(step, 0.0, betas)[1])
    _assert_only_row_poisoned(run(jnp.array([0.5, -3.0, 2.0])), run(jnp.array([0.5, 1.0, 2.0])),
                              1)


# ------------------------------------------------------------------------------------------------
# check_theorems


def test_check_theorems_on_poisoned_inputs_never_holds(monkeypatch):
    """With the concrete check bypassed, an invalid p0 reaches the compiled diagnostics: every
    fact reports ``holds: False`` with a NaN slack, not a plausible ``True``."""
    monkeypatch.setattr(_checks, "probability_vector", lambda name, p, **kwargs: p)
    checks = theory.check_theorems(jnp.asarray(NOT_SUMMING), R, k=3, num_generations=3)
    assert set(checks) == {"normalization", "level_sets", "monotone_reward",
                           "reward_gain_bound", "limit"}
    for name, check in checks.items():
        assert check["holds"] is False, name
        assert math.isnan(check["slack"]), name


def test_check_theorems_diagnostics_are_poisoned_by_a_negative_beta():
    slacks = theory._pure_curation_diagnostics(P, R[:, None], curators.Luce(beta=jnp.float32(-1.0)),
                                               k=3, num_generations=3, num_nodes=128)
    assert all(math.isnan(float(s)) for s in slacks.values())


def test_check_theorems_valid_inputs_still_hold_and_traced_inputs_raise():
    checks = theory.check_theorems(P, R, k=3, p_data=Q, real_fraction=0.5, num_generations=5)
    assert all(c["holds"] for c in checks.values()), checks
    with pytest.raises(ValueError, match="`beta` must be concrete"):
        jax.jit(lambda b: theory.check_theorems(P, R, k=3, beta=b)["limit"]["slack"])(1.0)
