"""Exact ecosystem dynamics and drifting preferences (selfconsume.theory) against NumPy references
and theory.

Tolerances. The curated laws are quadratures that converge spectrally: against enumeration in
float64 the measured absolute errors of the factor H are below 4e-14 (tests/test_curators.py),
so a curated law, an ecosystem step or a few generations of one agree with the reference to
~1e-13; EXACT_TOL = 1e-10 leaves three orders of magnitude for other platforms while failing any
modelling error (a wrong mixing weight or column is O(1e-2) here). Paths that compute the same
thing in the same compiled order are compared exactly (M = 1 against retrain_map); batched
(vmapped) against unbatched reductions may round differently, hence SAME_TOL = 1e-13 in float64
and 2e-6 relative in float32 (a few ulps accumulated over the generations).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfconsume import curators as cur
from selfconsume import theory
from tests import ecosystem_reference as eref

EXACT_TOL = 1e-10
SAME_TOL = 1e-13


def _instance(seed, num_models, num_states, *, columns=1):
    """(ps (M, S), rewards (S,) or (S, R), p_data (S,), W (M, M)) from one seed."""
    rng = np.random.default_rng(seed)
    ps = rng.dirichlet(np.ones(num_states), size=num_models)
    rewards = rng.uniform(0.0, 2.0, (num_states, columns))
    rewards = rewards[:, 0] if columns == 1 else rewards
    p_data = rng.dirichlet(np.ones(num_states))
    w = rng.dirichlet(np.ones(num_models), size=num_models)
    return ps, rewards, p_data, w


# ------------------------------------------------------------------------------------------------
# The map and the trajectory against the NumPy reference
# ------------------------------------------------------------------------------------------------

LUCE_CASES = [
    # (seed, M, S, k, betas, fractions, reward columns, columns)
    pytest.param(0, 2, 4, 3, (0.5, 2.0), (0.2, 0.0), 1, None, id="M2-k3-betas-fractions"),
    pytest.param(1, 3, 5, 2, 1.5, 0.0, 2, (0, 1, 1), id="M3-k2-two-columns"),
    pytest.param(2, 2, 6, 4, (math.inf, 0.7), 0.3, 1, None, id="M2-k4-best-of-k",
                 marks=pytest.mark.slow),
    pytest.param(3, 3, 4, math.inf, (0.3, 1.0, 2.0), (0.1, 0.5, 0.9), 1, None, id="M3-tilt"),
]


@pytest.mark.parametrize("seed,m,s,k,betas,fractions,num_columns,columns", LUCE_CASES)
def test_ecosystem_map_matches_reference(x64, seed, m, s, k, betas, fractions, num_columns,
                                         columns):
    ps, rewards, p_data, w = _instance(seed, m, s, columns=num_columns)
    with_data = np.any(np.asarray(fractions) > 0)
    got = theory.ecosystem_map(ps, rewards, interaction=w, k=k, beta=jnp.asarray(betas),
                               p_data=p_data if with_data else None,
                               real_fraction=jnp.asarray(fractions), columns=columns)
    assert got.shape == (m, s) and got.dtype == jnp.float64
    want = eref.ecosystem_map(ps, rewards, w, k, betas=np.broadcast_to(betas, (m,)).tolist(),
                              p_data=p_data if with_data else None,
                              real_fractions=np.broadcast_to(fractions, (m,)).tolist(),
                              columns=columns)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_TOL)
    np.testing.assert_allclose(np.sum(got, axis=1), 1.0, rtol=0, atol=1e-14)


CURATOR_CASES = [
    pytest.param(lambda: [cur.top_m(2, 1.0), cur.top_m(2, 3.0)],
                 [("top_m", 2, 1.0, None), ("top_m", 2, 3.0, None)], 3, id="top_m-rates"),
    pytest.param(lambda: [cur.thurstone(0.5), cur.thurstone(1.5)],
                 [("thurstone", 0.5, None), ("thurstone", 1.5, None)], 3, id="thurstone-rates",
                 marks=pytest.mark.slow),
    pytest.param(lambda: [cur.adversarial(cur.luce(2.0), 0.1), cur.adversarial(cur.luce(0.5), 0.4)],
                 [("adversarial", ("luce", 2.0, None), 0.1),
                  ("adversarial", ("luce", 0.5, None), 0.4)], 4, id="adversarial-rates"),
    pytest.param(lambda: cur.mixture([cur.luce(1.0), cur.thurstone(1.0)], [0.3, 0.7]),
                 [("mixture", [("luce", 1.0, None), ("thurstone", 1.0, None)], [0.3, 0.7])] * 2,
                 3, id="mixture-shared", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("build,specs,k", CURATOR_CASES)
def test_ecosystem_map_with_curators_matches_reference(x64, build, specs, k):
    ps, rewards, p_data, w = _instance(7, 2, 4, columns=2)
    got = theory.ecosystem_map(ps, rewards, interaction=w, k=k, p_data=p_data,
                               real_fraction=jnp.asarray([0.25, 0.0]), columns=(1, 0),
                               curator=build())
    want = eref.ecosystem_map(ps, rewards, w, k, specs=specs, p_data=p_data,
                              real_fractions=[0.25, 0.0], columns=(1, 0))
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_TOL)


def test_ecosystem_trajectory_iterates_the_reference(x64):
    ps, rewards, p_data, w = _instance(11, 3, 5)
    betas, fractions = [0.5, 1.0, 3.0], [0.1, 0.0, 0.4]
    got = theory.ecosystem_trajectory(ps, rewards, num_generations=4, interaction=w, k=3,
                                      beta=jnp.asarray(betas), p_data=p_data,
                                      real_fraction=jnp.asarray(fractions))
    assert got.shape == (5, 3, 5)
    np.testing.assert_array_equal(got[0], ps)
    want = eref.ecosystem_trajectory(ps, rewards, w, 3, 4, betas=betas, p_data=p_data,
                                     real_fractions=fractions)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_TOL)
    # ... and each row is the map applied to the previous one.
    np.testing.assert_allclose(
        got[2], theory.ecosystem_map(got[1], rewards, interaction=w, k=3, beta=jnp.asarray(betas),
                                     p_data=p_data, real_fraction=jnp.asarray(fractions)),
        rtol=0, atol=SAME_TOL)


# ------------------------------------------------------------------------------------------------
# Special interactions: one model, W = I
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_curator", [
    pytest.param(False, id="luce"), pytest.param(True, id="top_m", marks=pytest.mark.slow)])
def test_one_model_is_retrain_map_exactly(x64, with_curator):
    """M = 1, W = [[1]] runs the same operations as retrain_map / trajectory (no batching over
    models, no extra rounding in the mixing): equal bit for bit."""
    ps, rewards, p_data, _ = _instance(12, 1, 5)
    options = dict(curator=cur.top_m(2, 1.5)) if with_curator else dict(beta=1.5)
    for data in [dict(), dict(p_data=p_data, real_fraction=0.3)]:
        got = theory.ecosystem_map(ps, rewards, interaction=[[1.0]], k=3, **data, **options)
        want = theory.retrain_map(ps[0], rewards, k=3, **data, **options)
        np.testing.assert_array_equal(got[0], want)
    got = theory.ecosystem_trajectory(ps, rewards, num_generations=4, interaction=[[1.0]], k=3,
                                      p_data=p_data, real_fraction=0.3, **options)
    want = theory.trajectory(ps[0], rewards, num_generations=4, k=3, p_data=p_data,
                             real_fraction=0.3, **options)
    np.testing.assert_array_equal(got[:, 0], want)


def test_identity_interaction_is_independent_trajectories(x64):
    ps, rewards, p_data, _ = _instance(13, 3, 5, columns=2)
    columns, betas, fractions = (0, 1, 1), [0.5, 2.0, 1.0], [0.0, 0.2, 0.6]
    got = theory.ecosystem_trajectory(ps, rewards, num_generations=4, interaction=np.eye(3), k=3,
                                      beta=jnp.asarray(betas), p_data=p_data,
                                      real_fraction=jnp.asarray(fractions), columns=columns)
    for i in range(3):
        want = theory.trajectory(ps[i], rewards[:, columns[i]], num_generations=4, k=3,
                                 beta=betas[i], p_data=p_data, real_fraction=fractions[i])
        np.testing.assert_allclose(got[:, i], want, rtol=0, atol=SAME_TOL)
    # one curator per model: each model follows its own curator (k = inf: the tilt, whose rate
    # matters; finite k per-model curators are checked against enumeration above)
    curators = [cur.top_m(2, 0.3), cur.top_m(2, 1.0), cur.top_m(2, 3.0)]
    got = theory.ecosystem_trajectory(ps, rewards, num_generations=3, interaction=np.eye(3),
                                      k=math.inf, p_data=p_data, real_fraction=0.1,
                                      columns=columns, curator=curators)
    for i in range(3):
        want = theory.trajectory(ps[i], rewards[:, columns[i]], num_generations=3, k=math.inf,
                                 p_data=p_data, real_fraction=0.1, curator=curators[i])
        np.testing.assert_allclose(got[:, i], want, rtol=0, atol=SAME_TOL)


def test_trajectory_vmaps_over_coupling_and_compiles_once():
    """float32, k = inf (the plumbing; finite k is batched over models everywhere else).
    W(c) = (1 - c) I + c/M 1 1^T traced; vmapped == looped."""
    ps, rewards, p_data, _ = _instance(14, 3, 6)
    ps, rewards, p_data = (jnp.asarray(x, jnp.float32) for x in (ps, rewards, p_data))
    betas = jnp.asarray([0.5, 1.0, 2.0], jnp.float32)
    traces = []

    @jax.jit
    def run(c, a):
        traces.append(None)
        w = (1 - c) * jnp.eye(3) + c / 3 * jnp.ones((3, 3))
        return theory.ecosystem_trajectory(ps, rewards, num_generations=5, interaction=w,
                                           k=math.inf, beta=betas, p_data=p_data, real_fraction=a)

    cs = jnp.asarray([0.0, 0.4, 1.0])
    fractions = jnp.asarray([0.0, 0.3])
    grid = jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None))(cs, fractions)
    assert grid.shape == (3, 2, 6, 3, 6)
    assert len(traces) == 1
    for i, c in enumerate([0.0, 0.4, 1.0]):
        for j, a in enumerate([0.0, 0.3]):
            w = (1 - c) * np.eye(3) + c / 3 * np.ones((3, 3))
            want = theory.ecosystem_trajectory(ps, rewards, num_generations=5, interaction=w,
                                               k=math.inf, beta=betas, p_data=p_data,
                                               real_fraction=a)
            np.testing.assert_allclose(grid[i, j], want, rtol=2e-6, atol=1e-7)
    # c = 1 (complete mixing): after one generation every model is the same law
    np.testing.assert_allclose(grid[2, :, 1:], jnp.broadcast_to(grid[2, :, 1:, :1],
                                                                (2, 5, 3, 6)), atol=1e-7)


def test_trajectory_vmaps_over_curator_rates(x64):
    ps, rewards, _, w = _instance(15, 2, 5)

    def run(beta):
        return theory.ecosystem_trajectory(ps, rewards, num_generations=3, interaction=w,
                                           k=math.inf,
                                           curator=[cur.top_m(2, beta), cur.top_m(2, 2 * beta)])

    betas = jnp.asarray([0.0, 0.5, 2.0])
    batched = jax.vmap(run)(betas)
    for i, beta in enumerate([0.0, 0.5, 2.0]):
        np.testing.assert_allclose(batched[i], run(beta), rtol=0, atol=SAME_TOL)
    # beta = 0: no curation, pure mixing ps_{t+1} = W ps_t
    np.testing.assert_allclose(batched[0, 1], w @ ps, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Argument errors and traced invalid values
# ------------------------------------------------------------------------------------------------

PS2 = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
R3 = np.array([0.0, 1.0, 2.0])
R32 = np.stack([R3, -R3], axis=1)
W2 = np.array([[0.5, 0.5], [0.1, 0.9]])


def _map(**kwargs):
    options = dict(interaction=W2, k=2)
    options.update(kwargs)
    rewards = options.pop("rewards", R3)
    ps = options.pop("ps", PS2)
    return lambda: theory.ecosystem_map(ps, rewards, **options)


@pytest.mark.parametrize(
    "call,match",
    [
        (_map(interaction=np.array([[0.5, 0.6], [0.1, 0.9]])),
         r"`interaction` must be a row-stochastic.*row 0 summing to 1.1"),
        (_map(interaction=np.array([[1.5, -0.5], [0.1, 0.9]])),
         r"`interaction` must be a row-stochastic.*negative entry -0.5"),
        (_map(interaction=np.array([[np.nan, 1.0], [0.1, 0.9]])),
         r"`interaction` must be a row-stochastic.*non-finite"),
        (_map(interaction=np.eye(3)), r"`interaction` must have shape \(M, M\) = \(2, 2\)"),
        (_map(rewards=R32), r"`columns` is required with 2 reward columns"),
        (_map(rewards=R32, columns=(0, 2)), r"`columns` must hold integers in \[0, 1\]"),
        (_map(rewards=R32, columns=(0,)), r"`columns` must be a tuple of 2 column indices"),
        (_map(columns=(0, 0)), r"`columns` must be None with one reward"),
        (_map(rewards=R3[:2]), r"`rewards` must be \(S,\) or \(S, R\) with S = 3"),
        (_map(curator=cur.luce(1.0, column=1), rewards=R32, columns=(0, 1)),
         r"`curator` must read the one reward column.*own `column` None"),
        (_map(curator=[cur.luce(1.0), cur.top_m(1, 1.0)]),
         r"`curator` must hold curators of one structure"),
        (_map(curator=[cur.top_m(1, 1.0), cur.top_m(2, 1.0)]),
         r"`curator` must hold curators of one structure"),
        (_map(curator=[cur.luce(1.0)] * 3),
         r"`curator` must be one curator or a sequence of M = 2"),
        (_map(curator="luce"), r"`curator` must be None"),
        (_map(curator=cur.luce(1.0), beta=2.0), r"`beta` must be left at its default"),
        (_map(curator=cur.luce(1.0), beta=np.ones(2)), r"`beta` must be left at its default"),
        (_map(beta=np.ones(3)), r"`beta` must be a scalar or have shape \(2,\)"),
        (_map(beta=np.array([1.0, -1.0])), r"`beta` must be >= 0.*model 1"),
        (_map(real_fraction=0.5), r"`p_data` is required when `real_fraction` is not 0"),
        (_map(real_fraction=np.array([0.5, 1.5]), p_data=R3 / 3),
         r"`real_fraction` must be in \[0, 1\]; got 1.5 \(model 1\)"),
        (_map(ps=np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.2]])),
         r"every row of `ps` must sum to 1.*row 1"),
        (_map(ps=PS2[0]), r"`ps` must be \(M, S\)"),
        (_map(k=0), r"`k` must be >= 1"),
        (lambda: theory.ecosystem_trajectory(PS2, R3, num_generations=-1, interaction=W2, k=2),
         r"`num_generations` must be >= 0"),
        (lambda: theory.ecosystem_fixed_point(R3 / 3, R3, interaction=W2, k=2,
                                              real_fraction=np.array([0.5, 0.0])),
         r"`real_fraction` must be in \(0, 1\] for every model here; got 0.0 \(model 1\)"),
        (lambda: theory.ecosystem_fixed_point(R3 / 3, R3, interaction=W2, k=2, real_fraction=0.5,
                                              max_iterations=0), r"`max_iterations` must be >= 1"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_traced_invalid_values_give_nan():
    """Under vmap each invalid member (interaction, beta) is NaN, the valid ones unchanged."""
    ps, rewards = jnp.asarray(PS2, jnp.float32), jnp.asarray(R3, jnp.float32)

    def run(w, beta):
        return theory.ecosystem_trajectory(ps, rewards, num_generations=2, interaction=w,
                                           k=math.inf, beta=beta)

    bad_ws = [np.array([[1.5, -0.5], [0.1, 0.9]]), np.array([[0.5, 0.6], [0.1, 0.9]]),
              np.array([[np.nan, 1.0], [0.1, 0.9]])]
    ws = jnp.asarray(np.stack([W2, *bad_ws, W2]), jnp.float32)
    betas = jnp.asarray([1.0, 1.0, 1.0, 1.0, -1.0])
    batch = jax.vmap(run)(ws, betas)
    np.testing.assert_allclose(batch[0], run(W2, 1.0), rtol=1e-6)
    assert np.all(np.isfinite(batch[0]))
    assert np.all(np.isnan(batch[1:]))


# ------------------------------------------------------------------------------------------------
# Facts: check_ecosystem and the fixed point
# ------------------------------------------------------------------------------------------------

FACT_CASES = [
    pytest.param(3, None, id="luce-k3"),
    pytest.param(4, lambda: [cur.top_m(2, 0.5), cur.top_m(2, 2.0), cur.top_m(2, 5.0)],
                 id="top_m-rates", marks=pytest.mark.slow),
    pytest.param(2, None, id="luce-k2", marks=pytest.mark.slow),
    pytest.param(math.inf, None, id="luce-tilt", marks=pytest.mark.slow),
    pytest.param(3, lambda: cur.thurstone(0.4), id="thurstone-shared", marks=pytest.mark.slow),
    pytest.param(3, lambda: [cur.adversarial(cur.luce(2.0), 0.0)] * 3, id="adversarial-eps0",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("k,build", FACT_CASES)
def test_check_ecosystem_holds_on_random_instances(x64, k, build):
    """Three seeds per configuration (one compiled program): every fact holds and applies."""
    for seed in range(3):
        ps, rewards, p_data, w = _instance(20 + seed, 3, 8)
        rewards[1] = rewards[0]  # a tie: level tails, not per-state sums
        options = (dict(beta=jnp.asarray([0.5, 1.0, 3.0])) if build is None
                   else dict(curator=build()))
        checks = theory.check_ecosystem(ps, rewards, interaction=w, k=k, p_data=p_data,
                                        real_fraction=jnp.asarray([0.1, 0.3, 0.6]),
                                        num_generations=30, **options)
        assert list(checks) == ["normalization", "mixture_monotone", "kl_bound", "fixed_point"]
        failed = {name: c for name, c in checks.items() if not c["holds"]}
        assert not failed, (seed, failed)
        assert all(c["applicable"] for c in checks.values())


def test_mixture_monotone_needs_the_stationary_weights(x64):
    """Both models train on model 1's curated samples (pi = (0, 1)): the uniform mixture's top
    tail falls from 1/2 to 0 while the pi-mixture rises, as the fact says."""
    r = np.array([0.0, 1.0, 2.0])
    ps = np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    w = np.array([[0.0, 1.0], [0.0, 1.0]])
    traj = np.asarray(theory.ecosystem_trajectory(ps, r, num_generations=3, interaction=w,
                                                  k=math.inf, beta=2.0))
    uniform = traj.mean(axis=1)
    assert uniform[0, 2] == 0.5 and uniform[1, 2] == 0.0  # not monotone
    assert np.all(np.diff(traj[:, 1, 1]) > 0)  # the stationary model's top tail rises
    checks = theory.check_ecosystem(ps, r, interaction=w, k=math.inf, beta=2.0,
                                    num_generations=3)
    assert checks["mixture_monotone"]["holds"]


def test_check_ecosystem_not_applicable(x64):
    # the program of the luce-k3 case above (same shapes): only the host-side verdict differs
    ps, rewards, p_data, w = _instance(30, 3, 8, columns=2)
    checks = theory.check_ecosystem(ps, rewards, interaction=w, k=3, columns=(0, 1, 1),
                                    beta=jnp.asarray([0.5, 1.0, 3.0]), p_data=p_data,
                                    real_fraction=jnp.asarray([0.1, 0.3, 0.6]), num_generations=30)
    assert checks["mixture_monotone"] == {
        "holds": None, "slack": checks["mixture_monotone"]["slack"], "applicable": False,
        "reason": "the models read different reward columns"}
    assert math.isnan(checks["mixture_monotone"]["slack"])
    assert all(checks[name]["holds"] for name in ["normalization", "kl_bound", "fixed_point"])
    ps, rewards, p_data, w = _instance(31, 2, 5)
    adversaries = [cur.adversarial(cur.luce(1.0), 0.2), cur.adversarial(cur.luce(1.0), 0.0)]
    checks = theory.check_ecosystem(ps, rewards, interaction=w, k=math.inf, p_data=p_data,
                                    real_fraction=jnp.asarray([0.0, 0.5]), num_generations=5,
                                    curator=adversaries)
    assert "not monotone" in checks["mixture_monotone"]["reason"]
    assert checks["kl_bound"]["holds"] and checks["kl_bound"]["applicable"]  # model 1 only
    assert not checks["fixed_point"]["applicable"]  # model 0 has no real data
    checks = theory.check_ecosystem(ps, rewards, interaction=w, k=math.inf, num_generations=5)
    assert checks["mixture_monotone"]["holds"]
    assert [checks[name]["applicable"] for name in ["kl_bound", "fixed_point"]] == [False, False]


def test_check_ecosystem_can_fail(monkeypatch):
    """Not vacuous: a factor that decreases with the reward breaks mixture_monotone (and only
    it: the factor still normalises)."""
    honest = theory.curation_factor
    monkeypatch.setattr(theory, "curation_factor",
                        lambda p, r, **kw: honest(p, -jnp.asarray(r), **kw))
    ps7 = np.full((2, 7), 1 / 7)  # a size used nowhere else: no cached compile
    checks = theory.check_ecosystem(ps7, np.arange(7.0), interaction=W2, k=math.inf,
                                    num_generations=3)
    assert checks["normalization"]["holds"]
    assert not checks["mixture_monotone"]["holds"]


def test_check_ecosystem_rejects_bad_and_traced_input():
    ps, r = jnp.asarray(PS2, jnp.float32), jnp.asarray(R3, jnp.float32)
    with pytest.raises(ValueError, match=r"`p_data` is required"):
        theory.check_ecosystem(ps, r, interaction=W2, k=2, real_fraction=0.3)
    with pytest.raises(ValueError, match=r"`interaction` must be a row-stochastic"):
        theory.check_ecosystem(ps, r, interaction=np.ones((2, 2)), k=2)
    with pytest.raises(ValueError, match=r"`num_generations` must be >= 1"):
        theory.check_ecosystem(ps, r, interaction=W2, k=2, num_generations=0)
    with pytest.raises(ValueError, match=r"`interaction` must be concrete"):
        jax.jit(lambda w: theory.check_ecosystem(ps, r, interaction=w, k=2))(W2)


def test_ecosystem_fixed_point(x64):
    _, rewards, p_data, w = _instance(40, 3, 5)  # the shapes of the map tests: cached operations
    fractions = jnp.asarray([0.1, 0.3, 0.8])
    options = dict(interaction=w, k=3, beta=jnp.asarray([2.0, 1.0, 0.5]))
    star = theory.ecosystem_fixed_point(p_data, rewards, real_fraction=fractions, **options)
    assert star.shape == (3, 5) and np.all(np.isfinite(star))
    image = theory.ecosystem_map(star, rewards, p_data=p_data, real_fraction=fractions, **options)
    # stopped at an L1 change below 1e-12 (summed over models), a contraction
    np.testing.assert_allclose(image, star, rtol=0, atol=1e-11)
    # non-convergence is NaN, never an answer
    stopped = theory.ecosystem_fixed_point(p_data, rewards, real_fraction=fractions,
                                           max_iterations=1, **options)
    assert np.all(np.isnan(stopped))


@pytest.mark.slow
def test_ecosystem_fixed_point_traced_zero_fraction_is_nan(x64):
    _, rewards, p_data, w = _instance(40, 3, 5)
    options = dict(interaction=w, k=3, beta=jnp.asarray([2.0, 1.0, 0.5]))
    fractions = jnp.asarray([0.1, 0.3, 0.8])
    star = theory.ecosystem_fixed_point(p_data, rewards, real_fraction=fractions, **options)
    traced = jax.jit(lambda a: theory.ecosystem_fixed_point(p_data, rewards, real_fraction=a,
                                                            **options))
    assert np.all(np.isnan(traced(jnp.asarray([0.1, 0.0, 0.8]))))
    np.testing.assert_allclose(traced(fractions), star, rtol=0, atol=SAME_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, math.inf])
def test_ecosystem_fixed_point_is_the_limit(x64, k):
    """The trajectory from p_data converges to the fixed point (to 1e-10 after 1000 steps: the
    slowest rate here is about 1 - a_min = 0.95 per generation)."""
    _, rewards, p_data, w = _instance(41, 3, 6)
    options = dict(interaction=w, k=k, beta=jnp.asarray([2.0, 1.0, 0.5]),
                   real_fraction=jnp.asarray([0.05, 0.3, 0.8]))
    star = theory.ecosystem_fixed_point(p_data, rewards, **options)
    ps = theory.ecosystem_trajectory(np.tile(p_data, (3, 1)), rewards, num_generations=1000,
                                     p_data=p_data, **options)
    np.testing.assert_allclose(ps[-1], star, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Drifting preferences
# ------------------------------------------------------------------------------------------------


def _drift_instance(seed, num_states=5, num_features=2):
    rng = np.random.default_rng(seed)
    p0 = rng.dirichlet(np.ones(num_states))
    features = rng.normal(size=(num_states, num_features))
    w0 = rng.normal(size=num_features)
    return p0, features, w0, rng.dirichlet(np.ones(num_states))


@pytest.mark.parametrize("eta,build,spec", [
    pytest.param(0.4, None, None, id="luce"),
    pytest.param(1.0, None, None, id="eta1"),
    pytest.param(0.3, lambda: cur.top_m(2, 2.0), ("top_m", 2, 2.0, None), id="top_m",
                 marks=pytest.mark.slow),
])
def test_drift_matches_reference(x64, eta, build, spec):
    p0, features, w0, p_data = _drift_instance(50)
    options = dict(beta=1.5) if build is None else dict(curator=build())
    ps, ws = theory.drift_trajectory(p0, features, w0, eta=eta, num_generations=4, k=3,
                                     p_data=p_data, real_fraction=0.2, **options)
    assert ps.shape == (5, 5) and ws.shape == (5, 2)
    want_ps, want_ws = eref.drift(p0, features, w0, eta, 4, 3, beta=1.5, spec=spec,
                                  p_data=p_data, real_fraction=0.2)
    np.testing.assert_allclose(ps, want_ps, rtol=0, atol=EXACT_TOL)
    np.testing.assert_allclose(ws, want_ws, rtol=0, atol=EXACT_TOL)
    np.testing.assert_array_equal(ws[0], w0)


def test_drift_without_drift_is_trajectory(x64):
    p0, features, w0, p_data = _drift_instance(51)
    ps, ws = theory.drift_trajectory(p0, features, w0, eta=0.0, num_generations=4, k=3, beta=2.0,
                                     p_data=p_data, real_fraction=0.25)
    want = theory.trajectory(p0, features @ w0, num_generations=4, k=3, beta=2.0, p_data=p_data,
                             real_fraction=0.25)
    np.testing.assert_allclose(ps, want, rtol=0, atol=SAME_TOL)
    np.testing.assert_array_equal(ws, np.broadcast_to(w0, (5, 2)))


def test_drift_vmaps_over_eta_and_real_fraction():
    """float32: vmapped == looped (2e-6 relative: batched reductions round differently); a traced
    eta outside [0, 1] poisons its member only."""
    p0, features, w0, p_data = (jnp.asarray(x, jnp.float32) for x in _drift_instance(52))

    def run(eta, a):
        return theory.drift_trajectory(p0, features, w0, eta=eta, num_generations=5, k=math.inf,
                                       p_data=p_data, real_fraction=a)

    etas, fractions = jnp.asarray([0.0, 0.5, 1.0, 1.5]), jnp.asarray([0.0, 0.3])
    ps, ws = jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None))(etas, fractions)
    assert ps.shape == (4, 2, 6, 5) and ws.shape == (4, 2, 6, 2)
    for i, eta in enumerate([0.0, 0.5, 1.0]):
        for j, a in enumerate([0.0, 0.3]):
            want_ps, want_ws = run(eta, a)
            np.testing.assert_allclose(ps[i, j], want_ps, rtol=2e-6, atol=1e-7)
            np.testing.assert_allclose(ws[i, j], want_ws, rtol=2e-6, atol=1e-6)
    assert np.all(np.isnan(ps[3])) and np.all(np.isnan(ws[3]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta=1.5), r"`eta` must be in \[0, 1\]"),
    (dict(features=np.ones((4, 2))), r"`features` must be \(S, F\) with S = 5"),
    (dict(weights0=np.ones(3)), r"`weights0` must have shape \(F,\) = \(2,\)"),
    (dict(weights0=np.array([np.nan, 1.0])), r"`weights0` must be finite"),
    (dict(curator=cur.luce(1.0, column=0)), r"`curator` must read the one reward column"),
    (dict(curator=cur.luce(1.0), beta=2.0), r"`beta` must be left at its default"),
    (dict(real_fraction=0.2), r"`p_data` is required"),
])
def test_drift_argument_errors(kwargs, match):
    p0, features, w0, _ = _drift_instance(53)
    options = dict(features=features, weights0=w0, eta=0.5, num_generations=2, k=2)
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        theory.drift_trajectory(p0, options.pop("features"), options.pop("weights0"), **options)
