"""The sampled ecosystem loop (``sc.ecosystem``): M models retrained on each other's curated
samples.

* An ecosystem of one model (``W = [[1]]``) is ``sc.run`` bit for bit, for every family, with and
  without real data, a curator and a drifting preference.
* The categorical and histogram ecosystems (M = 3, per-model curators or Luce rates, per-model
  real fractions, coupling strengths c = 0 and 0.5) track the exact dynamics
  ``sc.theory.ecosystem_trajectory`` within their Monte-Carlo error; per-model reward columns
  follow the exact map with ``columns``.
* ``W = I`` is M independent loops (model i drawing with ``fold_in(key_t, i)``); the GMM and flow
  matching families run in an ecosystem of 3; ``jit`` + ``vmap`` over the coupling compiles
  once and equals separate calls; ``run_chunk`` + ``final_record`` reproduce ``run``.
* Bad input raises ``ValueError`` naming the argument; a traced bad ``W`` poisons the loop.

Statistical tests run a fixed set of seeds (fixed keys: deterministic) and state their
tolerance: ``Z`` standard errors of the seed mean (seed std / sqrt(seeds)) plus a measured
allowance for the O(1/N) bias of iterating a nonlinear map on empirical laws.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import curators as C
from tests import ecosystem_reference as eref

S = 6
R = np.linspace(0.0, 1.0, S).astype(np.float32)
R2 = np.stack([R, R[::-1]], axis=1)
P0 = np.asarray([0.3, 0.25, 0.2, 0.12, 0.08, 0.05], np.float32)
P0S = np.asarray([P0, [0.05, 0.1, 0.15, 0.2, 0.25, 0.25], np.full(S, 1.0 / S)], np.float32)
P_DATA = np.asarray([0.1, 0.3, 0.2, 0.1, 0.2, 0.1], np.float32)
A = np.asarray([0.1, 0.2, 0.3], np.float32)  # per-model real fractions
SEEDS, T, N, K = 24, 4, 2048, 4
# |seed mean - exact| <= Z standard errors + allowance. 24 seeds: the t statistic has 23 degrees of
# freedom, two-sided level about 5e-5 per comparison at Z = 5, so well under 1% over the 144-192
# (generation, model, state, coupling) entries a test compares (the keys are fixed, so each test
# is deterministic; the level says how unlucky a fixed key would have to be).
Z = 5.0
# The O(1/N) bias of a probability of the sampled loop, per generation: measured with 2048 seeds
# at N = 256 in the settings below, the largest N x |seed mean - exact| over models, states and
# couplings was 0.23 +- 0.13 at generation 1 and 1.14 +- 0.36 at generation 4 (categorical),
# 0.27 +- 0.14 and 0.56 +- 0.28 (histogram); with 1024 seeds at N = 2048 none was resolved
# (largest z 2.8). So t * 0.5 / N bounds it at generation t (2.4e-4 per generation here, about a
# tenth of the standard error). The rewards (in [0, 1]) get the allowance summed over the states,
# 3 t / N; their measured bias was at most 0.55 +- 0.16 / N (the kept reward, generation 4).
BIAS = 0.5


def _categorical(p0s=P0S):
    model = sc.models.categorical(S)
    params0 = jax.vmap(lambda p: model.init(jax.random.key(0), jnp.arange(S), p))(
        jnp.asarray(p0s))
    return model, params0


def _table(table):
    table = jnp.asarray(table)
    return lambda x: table[x]


def _probs(state, info):
    del info
    return {"probs": state.params.probs}


def _check_tracks(probs, exact, what):
    """``probs`` (seeds, T + 1, M, S) against ``exact`` (T + 1, M, S): generation 0 exactly (up to
    float32 rounding), then Z standard errors plus t * BIAS / N. Returns the tolerance."""
    probs, exact = np.asarray(probs, np.float64), np.asarray(exact, np.float64)
    seeds = probs.shape[0]
    np.testing.assert_allclose(probs[:, 0], np.broadcast_to(exact[0], probs[:, 0].shape),
                               atol=1e-6)
    mean = probs.mean(axis=0)
    se = probs.std(axis=0, ddof=1) / math.sqrt(seeds)
    t = np.arange(exact.shape[0])[:, None, None]
    # states of no mass anywhere (se = 0) must agree to rounding
    tolerance = Z * np.maximum(se, 1e-7) + t * BIAS / N
    error = np.abs(mean - exact)
    assert np.all(error[1:] <= tolerance[1:]), (what, np.max(error[1:] / tolerance[1:]),
                                                mean, exact, se)
    return tolerance


# ------------------------------------------------------------------------------------------------
# 1. One model is sc.run, bit for bit
# ------------------------------------------------------------------------------------------------


def _real_2d():
    return jax.random.normal(jax.random.key(5), (48, 2)) * 0.5 + jnp.asarray([[0.3, -0.2]])


def _one_model_case(name):
    """(model, params0, real, hyper, reward_fn, config, options) of one case."""
    config = sc.LoopConfig(num_generations=3, num_samples=64, k=4)
    if name.startswith("categorical"):
        model = sc.models.categorical(S)
        params0 = model.init(jax.random.key(0), jnp.arange(S), jnp.asarray(P0))
        real = jnp.arange(S) if "real" in name else None
        hyper = sc.Hyperparams(beta=2.0, real_fraction=0.3 if real is not None else 0.0)
        options = {}
        if "real" in name:
            options["real_weights"] = jnp.asarray(P_DATA)
        if "curator" in name:
            options["curator"] = C.top_m(2, 1.0)
        if "preference" in name:
            options["preference"] = sc.preferences.linear("states", jnp.asarray(R), eta=0.3)
        return model, params0, real, hyper, _table(R), config, options
    dim = 1 if name == "histogram-1d" else 2
    real = _real_2d()[:, :dim]
    reward = lambda x: -jnp.sum((x - 0.5) ** 2, axis=1)
    if name.startswith("histogram"):
        model = sc.models.histogram(6, -1.5, 1.5, dim)
    elif name.startswith("gaussian"):
        model = sc.models.gaussian(dim)
    elif name.startswith("gmm"):
        model = sc.models.gmm(2, dim, em_steps=2)
    else:
        model = sc.models.flow_matching(dim, width=8, depth=1, time_frequencies=1, batch_size=16,
                                        steps=2, init_steps=2, num_sample_steps=2)
    params0 = model.init(jax.random.key(1), real)
    with_real = not name.endswith("-1d") and "noreal" not in name
    hyper = sc.Hyperparams(beta=1.5, real_fraction=0.25 if with_real else 0.0)
    return model, params0, real if with_real else None, hyper, reward, config, {}


ONE_MODEL_CASES = [
    "categorical-real-curator-preference",
    pytest.param("gaussian-noreal", marks=pytest.mark.slow),
    pytest.param("categorical", marks=pytest.mark.slow),
    pytest.param("categorical-real-curator", marks=pytest.mark.slow),
    pytest.param("categorical-preference", marks=pytest.mark.slow),
    pytest.param("histogram-2d", marks=pytest.mark.slow),
    pytest.param("histogram-1d", marks=pytest.mark.slow),
    pytest.param("gaussian", marks=pytest.mark.slow),
    pytest.param("gmm", marks=pytest.mark.slow),
    pytest.param("gmm-noreal", marks=pytest.mark.slow),
    pytest.param("flow_matching", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", ONE_MODEL_CASES)
def test_one_model_is_sc_run_bit_for_bit(name):
    """``sc.ecosystem.run(key, params0[None], ..., interaction=[[1]])`` equals ``sc.run(key,
    params0, ...)`` exactly: every history entry (model axis dropped), the final params and
    the final reward params."""
    model, params0, real, hyper, reward_fn, config, options = _one_model_case(name)
    kwargs = dict(model=model, reward_fn=reward_fn, config=config, **options)
    key = jax.random.key(3)
    final, history = sc.run(key, params0, real, hyper, **kwargs)
    efinal, ehistory = sc.ecosystem.run(key, jax.tree.map(lambda x: x[None], params0), real,
                                        hyper, interaction=jnp.ones((1, 1)), **kwargs)
    assert set(ehistory) == set(history)
    for entry, value in history.items():
        got = np.asarray(ehistory[entry])
        assert got.shape == (config.num_generations + 1, 1) + value.shape[1:], entry
        np.testing.assert_array_equal(got[:, 0], np.asarray(value), err_msg=entry)
    for a, b in zip(jax.tree.leaves(efinal.params), jax.tree.leaves(final.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b))
    assert int(efinal.generation[0]) == int(final.generation) == config.num_generations
    if "preference" in options:
        assert "reward_params" in history
        np.testing.assert_array_equal(np.asarray(efinal.reward_params)[0],
                                      np.asarray(final.reward_params))
    assert np.all(np.asarray(history["fit_is_finite"]))


# ------------------------------------------------------------------------------------------------
# 2. Exact vs sampled: categorical and histogram
# ------------------------------------------------------------------------------------------------

COUPLINGS = (0.0, 0.5)


def _couplings_and_seeds(one, seed):
    """``one(key, c)`` for SEEDS keys and the couplings, one compiled program: (c, seeds, ...)."""
    keys = jax.random.split(jax.random.key(seed), SEEDS)
    batched = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))
    return jax.jit(batched)(keys, jnp.asarray(COUPLINGS, jnp.float32))


def _distinguishes(exact, tolerances):
    """The exact trajectories of c = 0 and c = 0.5 differ by more than the tolerance somewhere (the
    test sees the coupling), and each moved away from generation 0."""
    gap = np.abs(np.asarray(exact[0]) - np.asarray(exact[1]))[1:]
    assert np.any(gap > 2 * np.maximum(tolerances[0], tolerances[1])[1:]), gap.max()
    for e, tol in zip(exact, tolerances):
        assert np.any(np.abs(e[-1] - e[0]) > 10 * tol[-1]), e


CURATORS = [C.luce(3.0), C.luce(2.0), C.luce(0.0)]
BETAS = [3.0, 2.0, 0.0]  # the same, for the NumPy reference
COLUMNS = (0, 1, 0)


@pytest.fixture(scope="module")
def categorical_ecosystem():
    """M = 3 categorical models on S = 6 states, k = 4, N = 2048, 24 seeds, couplings c = 0 and
    0.5 (one compiled program): rewards (n, 2) = (r, reversed r) read by model i on column
    ``COLUMNS[i]``; model 0 curated by Luce with beta = 3 on r, model 1 with beta = 2 on reversed
    r, model 2 uncurated (Luce with beta = 0: one of k uniformly); real fractions (0.1, 0.2, 0.3)
    of a shared p_data. Returns the sampled histories (c, seeds, T + 1, M, ...) and the exact
    trajectories (c, T + 1, M, S)."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=T, num_samples=N, k=K)
    hyper = sc.Hyperparams(real_fraction=jnp.asarray(A))

    def one(key, c):
        _, history = sc.ecosystem.run(
            key, params0, jnp.arange(S), hyper, model=model, reward_fn=_table(R2), config=config,
            interaction=sc.ecosystem.coupling(3, c), curator=CURATORS, columns=COLUMNS,
            real_weights=jnp.asarray(P_DATA), metrics_fn=_probs)
        return history

    history = _couplings_and_seeds(one, 7)
    exact = np.stack([np.asarray(sc.theory.ecosystem_trajectory(
        jnp.asarray(P0S), jnp.asarray(R2), num_generations=T,
        interaction=sc.ecosystem.coupling(3, c), k=K, p_data=jnp.asarray(P_DATA),
        real_fraction=jnp.asarray(A), curator=CURATORS, columns=COLUMNS), np.float64)
        for c in COUPLINGS])
    return {name: np.asarray(v, np.float64) for name, v in history.items()}, exact


def test_categorical_ecosystem_tracks_the_exact_dynamics(categorical_ecosystem):
    """The fixture's setting: the seed mean of every probability of every model against
    ``ecosystem_trajectory`` (per-model curators, real fractions and columns) within Z = 5
    standard errors plus t * 0.5 / N (module constants), at c = 0 (W = I: three independent
    loops) and c = 0.5; the two exact trajectories are told apart."""
    history, exact = categorical_ecosystem
    probs = history["probs"]
    assert probs.shape == (len(COUPLINGS), SEEDS, T + 1, 3, S)
    assert exact.shape == (len(COUPLINGS), T + 1, 3, S)
    tolerances = [_check_tracks(probs[i], exact[i], f"c={c}") for i, c in enumerate(COUPLINGS)]
    _distinguishes(exact, tolerances)
    assert np.all(history["fit_is_finite"] == 1.0)


def test_histogram_ecosystem_tracks_the_exact_dynamics():
    """The same on a 1-D histogram (8 cells on [0, 1): its exact law is the cell probabilities
    with rewards at the cell centres and p_data the histogram of the real data), M = 3 models
    started from differently tilted histograms of the data, per-model Luce rates
    ``hyper.beta = (3, 0, 1)`` and real fractions (0.3, 0.1, 0.2); tolerance as above."""
    bins = 8
    hist = sc.models.histogram(bins, 0.0, 1.0, 1)
    centres = sc.models.histogram_centers(bins, 0.0, 1.0, 1)
    real = jnp.asarray(np.random.default_rng(3).beta(2.0, 5.0, size=(4096, 1)), jnp.float32)
    params0 = jax.vmap(lambda s: hist.init(jax.random.key(0), real, jnp.exp(s * real[:, 0])))(
        jnp.asarray([0.0, 2.0, -2.0]))
    p_data = hist.init(jax.random.key(0), real).probs
    betas, fractions = jnp.asarray([3.0, 0.0, 1.0]), jnp.asarray([0.3, 0.1, 0.2])

    def reward(x):
        return 2.0 * x[:, 0] - (x[:, 0] - 0.6) ** 2

    config = sc.LoopConfig(num_generations=T, num_samples=N, k=K)

    def one(key, c):
        _, history = sc.ecosystem.run(
            key, params0, real, sc.Hyperparams(beta=betas, real_fraction=fractions), model=hist,
            reward_fn=reward, config=config, interaction=sc.ecosystem.coupling(3, c),
            default=False, metrics_fn=_probs)
        return history["probs"]

    probs = np.asarray(_couplings_and_seeds(one, 11))
    exact, tolerances = [], []
    for i, c in enumerate(COUPLINGS):
        e = np.asarray(sc.theory.ecosystem_trajectory(
            params0.probs, reward(centres), num_generations=T,
            interaction=sc.ecosystem.coupling(3, c), k=K, beta=betas, p_data=p_data,
            real_fraction=fractions))
        tolerances.append(_check_tracks(probs[i], e, f"c={c}"))
        exact.append(e)
    _distinguishes(exact, tolerances)


# ------------------------------------------------------------------------------------------------
# 3. Per-model reward columns
# ------------------------------------------------------------------------------------------------


def test_each_model_reads_its_own_reward_column(categorical_ecosystem):
    """In the fixture's setting (rewards (n, 2), columns = (0, 1, 0)), model i's default
    ``expected_reward`` and ``kept_reward_mean`` are on its own column and their seed means track
    the exact map with ``columns``: the expected reward of p_t^i on column c_i, and the kept
    reward, of its curated law (NumPy enumeration, ``tests/ecosystem_reference.py``). Tolerance:
    Z standard errors plus the probabilities' allowance summed over the states (rewards in
    [0, 1]). The recorded expected reward is the recorded law's on column c_i (to float32
    rounding); the exact
    trajectories with every model on column 0 lie outside the tolerance."""
    history, exact = categorical_ecosystem
    col = np.asarray(COLUMNS)
    for name in ("expected_reward", "kept_reward_mean"):
        assert history[name].shape == (len(COUPLINGS), SEEDS, T + 1, 3), name
    own = R2[:, col].T  # (M, S): model i's reward
    np.testing.assert_allclose(history["expected_reward"],
                               np.sum(history["probs"] * own, axis=-1), atol=1e-6)
    allowance = np.arange(T + 1)[:, None] * BIAS / N * S
    for ci, c in enumerate(COUPLINGS):
        exact_expected = np.sum(exact[ci] * own, axis=-1)  # (T + 1, M)
        exact_kept = np.asarray([[eref.curated(exact[ci, t, i], own[i], K, BETAS[i]) @ own[i]
                                  for i in range(3)] for t in range(T + 1)])
        for name, target in (("expected_reward", exact_expected), ("kept_reward_mean",
                                                                   exact_kept)):
            got = history[name][ci]
            se = got.std(axis=0, ddof=1) / math.sqrt(SEEDS)
            tolerance = Z * np.maximum(se, 1e-7) + allowance
            error = np.abs(got.mean(axis=0) - target)
            assert np.all(error <= tolerance), (c, name, got.mean(axis=0), target, se)
        # reading column 0 for every model would be told apart (NumPy reference trajectory)
        wrong = eref.ecosystem_trajectory(P0S, R2, np.asarray(sc.ecosystem.coupling(3, c)), K, T,
                                          betas=BETAS, p_data=P_DATA, real_fractions=A,
                                          columns=(0, 0, 0))
        wrong_expected = np.sum(wrong * R2[:, 0], axis=-1)
        got = history["expected_reward"][ci]
        se = got.std(axis=0, ddof=1) / math.sqrt(SEEDS)
        assert np.any(np.abs(wrong_expected - got.mean(axis=0))[1:] > (Z * se + allowance)[1:])
    # model 1 was curated toward the low states (its own column), model 0 toward the high ones
    assert exact[1, -1, 0] @ R > exact[1, 0, 0] @ R + 0.1
    assert exact[1, -1, 1] @ R2[:, 1] > exact[1, 0, 1] @ R2[:, 1] + 0.1


# ------------------------------------------------------------------------------------------------
# 4. W = I and other families
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_identity_interaction_is_independent_loops():
    """With W = I, model i of the ecosystem is the loop of one model (``sc.retrain.run_chunk``)
    whose generation keys are ``fold_in(split(key, T + 1)[t], i)`` (model 0: the keys
    themselves). The kept samples of generation 0 are equal (same params, same key); later ones
    agree but for a sample whose uniform draw falls within rounding of a CDF step (the pooled,
    vmapped fit over 3 n rows, two thirds of weight 0, rounds differently from a fit on n rows:
    measured 1e-7): at most 1e-3 of them; the params agree within 1e-6."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=256, k=K)
    hyper = sc.Hyperparams(beta=2.0, real_fraction=0.2)
    metrics = lambda s, i: {"probs": s.params.probs, "kept": i.kept.samples}
    kwargs = dict(model=model, reward_fn=_table(R), config=config, default=False,
                  metrics_fn=metrics)
    key = jax.random.key(3)
    _, eco = sc.ecosystem.run(key, params0, jnp.arange(S), hyper, interaction=jnp.eye(3),
                              **kwargs)
    keys = jax.random.split(key, config.num_generations + 1)[:-1]
    folded = jnp.stack([keys] + [jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
                                 for i in (1, 2)])

    def alone(keys_i, params_i):
        state = sc.retrain.init_state(params_i, model=model, config=config)
        return sc.retrain.run_chunk(keys_i, state, hyper, jnp.arange(S), **kwargs)[1]

    solo = jax.vmap(alone)(folded, params0)  # (3, T, ...)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(solo["kept"][i, 0]),
                                      np.asarray(eco["kept"][0, i]))
        mismatch = np.mean(np.asarray(solo["kept"][i]) != np.asarray(eco["kept"][:-1, i]))
        assert mismatch <= 1e-3, (i, mismatch)
        np.testing.assert_allclose(np.asarray(solo["probs"][i]), np.asarray(eco["probs"][:-1, i]),
                                   atol=1e-6)


def _gmm_params():
    """Three 2-component GMMs in 2-D, built by hand (no EM at init)."""
    means = jnp.asarray([[-1.0, 0.0], [1.0, 0.0]])
    return sc.models.GMMParams(
        weights=jnp.full((3, 2), 0.5),
        means=means[None] + 0.2 * jnp.arange(3.0)[:, None, None],
        covs=jnp.broadcast_to(0.3 * jnp.eye(2), (3, 2, 2, 2)))


def _candidates(state, info):
    del state
    return {"candidates": info.candidates}


@pytest.mark.slow
def test_gmm_ecosystem_with_a_drifting_preference_runs():
    """Three tiny GMMs in 2-D (W = coupling(3, 0.5), real data, a linear preference on the
    coordinates): histories of shape (T + 1, 3, ...), all finite; each model's preference
    weights drift with its own candidates, w_t = (1 - eta) w_{t-1} + eta mean(x_t) (float32
    rounding of a mean of 64 points: 1e-5)."""
    model = sc.models.gmm(2, 2, em_steps=2)
    real = _real_2d()
    eta, w0 = 0.5, np.asarray([1.0, 0.0], np.float32)
    config = sc.LoopConfig(num_generations=2, num_samples=32, k=2)
    final, history = sc.ecosystem.run(
        jax.random.key(2), _gmm_params(), real, sc.Hyperparams(real_fraction=0.2), model=model,
        reward_fn=lambda x: -jnp.sum((x - 1.0) ** 2, axis=1), config=config,
        interaction=sc.ecosystem.coupling(3, 0.5), metrics_fn=_candidates,
        preference=sc.preferences.linear("coordinates", jnp.asarray(w0), eta=eta))
    for name, value in history.items():
        assert value.shape[:2] == (3, 3), name
        assert np.all(np.isfinite(np.asarray(value))), name
    assert history["reward_params"].shape == (3, 3, 2)
    assert history["candidates"].shape == (3, 3, 64, 2)
    assert np.all(np.asarray(history["fit_is_finite"]))
    assert final.params.means.shape == (3, 2, 2)
    w = np.asarray(history["reward_params"], np.float64)
    x = np.asarray(history["candidates"], np.float64)
    np.testing.assert_array_equal(w[0], np.broadcast_to(w0, (3, 2)))
    for t in range(1, 3):
        np.testing.assert_allclose(w[t], (1 - eta) * w[t - 1] + eta * x[t].mean(axis=1),
                                   atol=1e-5)
    # the models differ (they are not one model repeated)
    assert not np.allclose(w[1, 0], w[1, 1])


@pytest.mark.slow
def test_flow_matching_ecosystem_runs():
    """Three tiny flow matching models (width 8, 2 Adam steps per fit) in an ecosystem: finite
    histories of shape (T + 1, 3, ...)."""
    model = sc.models.flow_matching(2, width=8, depth=1, time_frequencies=1, batch_size=16,
                                    steps=2, init_steps=2, num_sample_steps=2)
    real = _real_2d()
    params0 = jax.vmap(lambda k: model.init(k, real))(jax.random.split(jax.random.key(0), 3))
    config = sc.LoopConfig(num_generations=2, num_samples=32, k=2)
    final, history = sc.ecosystem.run(
        jax.random.key(2), params0, real, sc.Hyperparams(real_fraction=0.2), model=model,
        reward_fn=lambda x: -jnp.sum((x - 1.0) ** 2, axis=1), config=config,
        interaction=sc.ecosystem.coupling(3, 0.5))
    for name, value in history.items():
        assert value.shape[:2] == (3, 3), name
        assert np.all(np.isfinite(np.asarray(value))), name
    assert np.all(np.asarray(history["fit_is_finite"]))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(final.params))


# ------------------------------------------------------------------------------------------------
# 5. jit and vmap over the coupling
# ------------------------------------------------------------------------------------------------


def test_vmap_over_the_coupling_compiles_once_and_equals_separate_calls():
    """``jax.jit(sc.ecosystem.run)`` with the static arguments, W built from a traced c: separate
    calls for several c trace once; ``vmap`` over c equals them (to float32 rounding of the
    batched fit: 1e-6) with the same kept samples, and new values of c never retrace."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=2, num_samples=128, k=K)
    traces = []

    def reward(x):
        traces.append(None)
        return jnp.asarray(R)[x]

    # ``default`` is a Python bool that selects the metrics: static too
    run = jax.jit(sc.ecosystem.run, static_argnames=("model", "reward_fn", "config", "columns",
                                                     "metrics_fn", "default"))
    metrics = lambda s, i: {"probs": s.params.probs, "kept": i.kept.samples}
    curators = [C.luce(2.0), C.luce(0.5), C.luce(0.0)]

    def at(c):
        return run(jax.random.key(4), params0, jnp.arange(S),
                   sc.Hyperparams(real_fraction=jnp.asarray(A)), model=model, reward_fn=reward,
                   config=config, interaction=sc.ecosystem.coupling(3, c), curator=curators,
                   metrics_fn=metrics, default=False)[1]

    cs = [0.0, 0.3, 1.0]
    separate = [at(jnp.float32(c)) for c in cs[:2]]
    n_traces = len(traces)
    assert n_traces > 0
    separate.append(at(jnp.float32(cs[2])))
    assert len(traces) == n_traces  # a new value of c never retraces
    batched = jax.vmap(at)(jnp.asarray(cs, jnp.float32))
    n_traces = len(traces)
    jax.vmap(at)(jnp.asarray([0.1, 0.2, 0.9], jnp.float32))
    assert len(traces) == n_traces
    for i, one in enumerate(separate):
        np.testing.assert_array_equal(np.asarray(batched["kept"][i]), np.asarray(one["kept"]))
        np.testing.assert_allclose(np.asarray(batched["probs"][i]), np.asarray(one["probs"]),
                                   atol=1e-6)
    # the coupling mattered: c = 0 and c = 1 differ
    assert not np.allclose(np.asarray(separate[0]["probs"][-1]),
                           np.asarray(separate[2]["probs"][-1]))


# ------------------------------------------------------------------------------------------------
# 6. The chunked loop
# ------------------------------------------------------------------------------------------------


def _seen(state, info):
    return {"probs": state.params.probs, "w": state.reward_params,
            "candidates": info.candidates, "kept": info.kept.samples,
            "kept_rewards": info.kept.rewards}


def test_run_chunk_and_final_record_reproduce_run():
    """``init_state``, ``run_chunk`` over ``split(key, T + 1)[:T]`` and ``final_record`` with
    the last key give ``run``'s history and final state exactly (each jitted; per-model
    Luce curators, per-model real fractions, a drifting preference). Each model's preference
    weights drift with its own candidates: w_t = (1 - eta) w_{t-1} + eta (state shares of model
    i's generation-t candidates) (float32 rounding: 1e-6)."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=64, k=K)
    hyper = sc.Hyperparams(real_fraction=jnp.asarray(A))
    eta = 0.3
    kwargs = dict(model=model, reward_fn=_table(R), config=config,
                  interaction=sc.ecosystem.coupling(3, 0.4),
                  curator=[C.luce(3.0), C.luce(1.0), C.luce(0.0)],
                  preference=sc.preferences.linear("states", jnp.asarray(R), eta=eta),
                  real_weights=jnp.asarray(P_DATA), default=False, metrics_fn=_seen)
    static = ("model", "reward_fn", "config", "metrics_fn", "default")
    run, run_chunk, final_record = (jax.jit(f, static_argnames=static) for f in (
        sc.ecosystem.run, sc.ecosystem.run_chunk, sc.ecosystem.final_record))
    key = jax.random.key(8)
    final, history = run(key, params0, jnp.arange(S), hyper, **kwargs)
    keys = jax.random.split(key, config.num_generations + 1)
    state = sc.ecosystem.init_state(params0, model=model, config=config, real_data=jnp.arange(S),
                                    preference=kwargs["preference"])
    assert state.generation.shape == (3,) and state.reward_params.shape == (3, S)
    state, chunk = run_chunk(keys[:-1], state, hyper, jnp.arange(S), **kwargs)
    last = final_record(keys[-1], state, hyper, jnp.arange(S), **kwargs)
    assert set(last) == set(history) == set(chunk)
    for name, value in history.items():
        chunked = np.concatenate([np.asarray(chunk[name]), np.asarray(last[name])[None]])
        np.testing.assert_array_equal(chunked, np.asarray(value), err_msg=name)
    np.testing.assert_array_equal(np.asarray(state.params.probs), np.asarray(final.params.probs))
    np.testing.assert_array_equal(np.asarray(state.reward_params),
                                  np.asarray(final.reward_params))
    np.testing.assert_array_equal(np.asarray(state.generation), [3, 3, 3])
    # the drift of every model, from its own candidates
    w = np.asarray(history["w"], np.float64)  # (T + 1, 3, S)
    cand = np.asarray(history["candidates"])  # (T + 1, 3, n k)
    np.testing.assert_array_equal(w[0], np.broadcast_to(R, (3, S)))
    for t in range(1, config.num_generations + 1):
        for i in range(3):
            share = np.bincount(cand[t, i], minlength=S) / cand.shape[2]
            np.testing.assert_allclose(w[t, i], (1 - eta) * w[t - 1, i] + eta * share,
                                       rtol=1e-6, atol=1e-6)
    assert not np.allclose(w[1, 0], w[1, 1])  # three streams, not one
    np.testing.assert_array_equal(np.asarray(history["kept_rewards"]),
                                  R[np.asarray(history["kept"])])
    assert np.all(np.asarray(history["fit_is_finite"]))


# ------------------------------------------------------------------------------------------------
# 7. Helpers and bad input
# ------------------------------------------------------------------------------------------------


def test_coupling_and_model_keys():
    w = np.asarray(sc.ecosystem.coupling(3, 0.6))
    np.testing.assert_allclose(w, 0.4 * np.eye(3) + 0.2, rtol=1e-6)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(sc.ecosystem.coupling(2, 0.0)), np.eye(2))
    np.testing.assert_allclose(np.asarray(sc.ecosystem.coupling(4, 1.0)), np.full((4, 4), 0.25))
    with pytest.raises(ValueError, match=r"`strength` must be in \[0, 1\]"):
        sc.ecosystem.coupling(3, 1.5)
    with pytest.raises(ValueError, match=r"`num_models` must be >= 1"):
        sc.ecosystem.coupling(0, 0.5)
    key = jax.random.key(9)
    keys = sc.ecosystem.model_keys(key, 3)
    assert keys.shape == (3,)
    data = lambda k: np.asarray(jax.random.key_data(k))
    np.testing.assert_array_equal(data(keys[0]), data(key))
    for i in (1, 2):
        np.testing.assert_array_equal(data(keys[i]), data(jax.random.fold_in(key, i)))
    _, params0 = _categorical()
    assert sc.ecosystem.num_models(params0) == 3
    unstacked = sc.models.GaussianParams(mean=jnp.zeros(2), cov=jnp.eye(2),
                                         data_scale=jnp.ones(()))  # a scalar leaf
    with pytest.raises(ValueError, match=r"`params` must be M models' params stacked"):
        sc.ecosystem.num_models(unstacked)


STATES = np.arange(S, dtype=np.int32)


def _bad_run(params=None, real=STATES, hyper=None, *, config=None, reward_fn=None,
             **options):
    model, params0 = _categorical()
    options.setdefault("interaction", sc.ecosystem.coupling(3, 0.5))
    return sc.ecosystem.run(
        jax.random.key(0), params0 if params is None else params, real,
        sc.Hyperparams() if hyper is None else hyper, model=model,
        reward_fn=reward_fn or _table(R),
        config=config or sc.LoopConfig(num_generations=1, num_samples=8, k=2), **options)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: _bad_run(interaction=jnp.full((2, 2), 0.5)),
                 r"`interaction` must be an \(M, M\) = \(3, 3\).*got shape \(2, 2\)", id="W-shape"),
    pytest.param(lambda: _bad_run(interaction=jnp.full((3,), 1 / 3)),
                 r"`interaction` must be an \(M, M\).*got shape \(3,\)", id="W-vector"),
    pytest.param(lambda: _bad_run(interaction=jnp.asarray([[1.2, -0.2, 0.0], [0.0, 1.0, 0.0],
                                                           [0.0, 0.0, 1.0]])),
                 r"`interaction` must be finite and non-negative", id="W-negative"),
    pytest.param(lambda: _bad_run(interaction=0.9 * jnp.eye(3)),
                 r"`interaction` must be .*rows summing to one.*row sums", id="W-row-sums"),
    pytest.param(lambda: _bad_run(interaction=jnp.full((3, 3), jnp.nan)),
                 r"`interaction` must be finite", id="W-nan"),
    pytest.param(lambda: _bad_run(params=sc.models.CategoricalParams(probs=jnp.asarray(P0))),
                 r"`params", id="params-without-model-axis"),
    pytest.param(lambda: _bad_run(columns=(0, 1), reward_fn=_table(R2)),
                 r"`columns` must be None or one reward column index >= 0 per model \(3 "
                 r"integers\); got \(0, 1\)", id="columns-length"),
    pytest.param(lambda: _bad_run(columns=(0, 1, 2), reward_fn=_table(R2)),
                 r"`columns` \(0, 1, 2\) must index the reward columns", id="columns-range"),
    pytest.param(lambda: _bad_run(columns=(0, -1, 1), reward_fn=_table(R2)),
                 r"`columns` must be None or one reward column index >= 0", id="columns-negative"),
    pytest.param(lambda: _bad_run(curator=[C.luce(1.0, column=0)] * 3, reward_fn=_table(R2),
                                  columns=(0, 1, 1)),
                 r"`curator\[0\]` reads its model's reward column.*own `column` must be None",
                 id="curator-own-column"),
    pytest.param(lambda: _bad_run(curator=C.luce(1.0, column=1), reward_fn=_table(R2)),
                 r"`curator\[0\]`.*own `column` must be None", id="shared-curator-own-column"),
    pytest.param(lambda: _bad_run(curator="luce"), r"`curator` must be None, a curator",
                 id="curator-type"),
    pytest.param(lambda: _bad_run(hyper=sc.Hyperparams(real_fraction=jnp.asarray([0.1, 0.2]))),
                 r"`hyper.real_fraction` must be a scalar or one value per model \(3,\); got "
                 r"shape \(2,\)", id="hyper-length"),
    pytest.param(lambda: _bad_run(hyper=sc.Hyperparams(beta=jnp.ones((3, 1)))),
                 r"`hyper.beta` must be a scalar or one value per model", id="hyper-rank"),
    pytest.param(lambda: _bad_run(hyper=sc.Hyperparams(
        real_fraction=jnp.asarray([0.1, 0.2, 1.5]))), r"`real_fraction` must be in \[0, 1\]",
        id="hyper-value"),
    pytest.param(lambda: _bad_run(hyper=sc.Hyperparams(real_fraction=0.5), real=None),
                 r"`real_fraction` = 0.5 needs `real_data`", id="real-fraction-without-data"),
    pytest.param(lambda: _bad_run(config=sc.LoopConfig(num_generations=1, num_samples=8, k=2,
                                                       regime="accumulate")),
                 r"`config.regime` must be 'replace'.*got 'accumulate'", id="accumulate"),
    pytest.param(lambda: _bad_run(preference="linear"),
                 r"`preference` must be a selfconsume.preferences preference", id="preference"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("curator", [
    pytest.param([C.luce(1.0), C.top_m(2, 1.0), C.luce(1.0)], id="structures"),
    pytest.param([C.luce(1.0), C.luce(2.0)], id="length"),
    pytest.param([C.luce(1.0), "luce", C.luce(1.0)], id="not-a-curator"),
])
def test_bad_curator_sequences_name_the_curator_argument(curator):
    """Curators of different structures, of the wrong number or not curators raise a
    ``ValueError`` naming the argument ``curator`` (or its entry ``curator[i]``), as
    ``sc.theory.ecosystem_map`` does; not ``curators``, which is no argument of
    ``sc.ecosystem.run``."""
    with pytest.raises(ValueError, match=r"`curator(\[\d+\])?`"):
        _bad_run(curator=curator)


@functools.cache
def _traced_loop():
    """One jitted ecosystem run (M = 3 categorical, T = 3) of a traced W and traced per-model
    real fractions: (final probs (M, S), fit_is_finite (T + 1, M))."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=16, k=2)

    @jax.jit
    def go(w, a):
        final, history = sc.ecosystem.run(
            jax.random.key(0), params0, jnp.arange(S), sc.Hyperparams(real_fraction=a),
            model=model, reward_fn=_table(R), config=config, interaction=w, default=False,
            metrics_fn=_probs)
        return final.params.probs, history["fit_is_finite"]

    return lambda w, a: tuple(np.asarray(x) for x in go(w, a))


def test_traced_bad_interaction_poisons_the_loop():
    """Under ``jit`` W is traced: rows not summing to one (or negative entries) give NaN params
    and ``fit_is_finite`` False for every model and generation instead of raising; a valid W
    runs finite in the same compiled program."""
    go = _traced_loop()
    a = jnp.asarray(A)
    probs, finite = go(sc.ecosystem.coupling(3, 0.5), a)
    assert np.all(finite) and np.all(np.isfinite(probs))
    for bad in (0.9 * jnp.eye(3), jnp.asarray([[1.2, -0.2, 0.0], [0.0, 1.0, 0.0],
                                               [0.0, 0.0, 1.0]])):
        probs, finite = go(bad, a)
        assert not np.any(finite), finite
        assert np.all(np.isnan(probs))


def test_traced_invalid_rate_of_one_model_poisons_the_models_that_use_its_samples():
    """A traced invalid real fraction of model 1 only (1.5): with W = I the other two models are
    untouched (finite), model 1 is NaN. With W = coupling(3, 0.5) models 0 and 2 refit on model
    1's kept samples, which from generation 1 on are drawn from NaN params: they must not report
    a finite, plausible fit (the package's rule for traced invalid values: NaN, never a plausible
    answer), so their final params are NaN and their last refit is flagged."""
    go = _traced_loop()
    a = jnp.asarray([0.1, 1.5, 0.2])
    probs, finite = go(jnp.eye(3), a)
    assert np.all(np.isnan(probs[1])) and not np.any(finite[:, 1])
    assert np.all(np.isfinite(probs[[0, 2]])) and np.all(finite[:, [0, 2]])
    probs, finite = go(sc.ecosystem.coupling(3, 0.5), a)
    assert np.all(np.isnan(probs[1])) and not np.any(finite[:, 1])
    assert np.all(np.isnan(probs)), probs  # models 0 and 2 trained on model 1's NaN-model samples
    assert not np.any(finite[-2:]), finite
