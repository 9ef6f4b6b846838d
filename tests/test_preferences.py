"""Drifting preferences (``sc.preferences``) and the loop with one (``sc.run(...,
preference=)``).

* ``linear``'s feature options ("states", a table, "coordinates", radial, a callable), its
  checks, equality and hashing, ``eta`` as a vmappable array leaf; the drift rule against a
  NumPy reference.
* In the categorical loop: ``reward_params`` row t is the rule applied to generation t's
  candidates, the curator reads the drifting reward (the kept samples carry ``reward_fn``'s),
  ``eta = 0`` is the loop with the fixed reward ``features @ w0`` bit for bit, and the sampled
  loop tracks the exact dynamics ``sc.theory.drift_trajectory`` within its Monte-Carlo error.
* ``custom`` rules; bad input raises ``ValueError`` naming the argument; a traced ``eta`` outside
  [0, 1] poisons the loop.

Statistical tests run a fixed set of seeds (fixed keys: deterministic) and state their
tolerance: ``Z`` standard errors of the seed mean plus a measured allowance for the O(1/N) bias of
iterating a nonlinear map on empirical laws.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import preferences as prefs
from selfconsume import reward_models as RM

S = 6
R = np.linspace(0.0, 1.0, S).astype(np.float32)
P0 = np.asarray([0.3, 0.25, 0.2, 0.12, 0.08, 0.05], np.float32)
P_DATA = np.asarray([0.1, 0.3, 0.2, 0.1, 0.2, 0.1], np.float32)
TABLE = np.asarray([[1.0, 0.0, 0.5], [0.0, 1.0, -1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                    [1.0, 1.0, 1.0], [-1.0, 0.5, 0.0]], np.float32)  # (S, 3) features
SEEDS, T, N, K = 24, 4, 2048, 4
# |seed mean - exact| <= Z standard errors + t * BIAS / N at generation t. 24 seeds: t with 23
# degrees of freedom, two-sided level about 5e-5 per comparison at Z = 5, under 1% over the
# (2 rates x 4 generations x 12) entries compared; fixed keys make the test deterministic.
Z = 5.0
# The O(1/N) bias per probability and weight and generation: measured with 2048 seeds at N = 256
# in this setting (both rates), none was resolved (largest z 2.2 over all entries), N x |seed
# mean - exact| staying below 0.58 +- 0.28 (generation 4); t * 0.5 / N bounds it at generation t
# (2.4e-4 per generation at N = 2048, about a tenth of the standard error over 24 seeds).
BIAS = 0.5


def _square_features(x):
    """A hashable user feature map (n, 1) -> (n, 2)."""
    x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)[:, 0]
    return jnp.stack([x, x * x], axis=1)


def _categorical(p0=P0):
    model = sc.models.categorical(S)
    return model, model.init(jax.random.key(0), jnp.arange(S), jnp.asarray(p0))


def _table(table):
    table = jnp.asarray(table)
    return lambda x: table[x]


# ------------------------------------------------------------------------------------------------
# 1. sc.preferences.linear: options, checks, structure
# ------------------------------------------------------------------------------------------------


def _radial_reference(x, centers, h):
    d2 = np.sum((np.asarray(x, np.float64)[:, None, :] - np.asarray(centers)[None]) ** 2, -1)
    return np.exp(-d2 / (2 * h * h))


STATES = np.asarray([0, 3, 5, 2, 2], np.int32)
POINTS = np.asarray([[0.0, 0.5], [1.0, -1.0], [0.3, 0.3]], np.float32)
CENTERS = [[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]]

FEATURE_CASES = {
    # name: (features option, weights0, samples, phi(samples) in NumPy)
    "states": ("states", R, STATES, np.eye(S)[STATES]),
    "table": (TABLE, np.asarray([1.0, -2.0, 0.5]), STATES, TABLE[STATES]),
    "table-list": (TABLE.tolist(), np.asarray([1.0, -2.0, 0.5]), STATES, TABLE[STATES]),
    "coordinates": ("coordinates", np.asarray([2.0, -1.0]), POINTS, POINTS),
    "radial-dict": ({"name": "radial", "centers": CENTERS, "bandwidth": 0.7},
                    np.asarray([1.0, 0.5, -1.0]), POINTS, _radial_reference(POINTS, CENTERS, 0.7)),
    "radial": (RM.radial(np.asarray(CENTERS), 0.7), np.asarray([1.0, 0.5, -1.0]), POINTS,
               _radial_reference(POINTS, CENTERS, 0.7)),
    "callable": (_square_features, np.asarray([1.0, 3.0]), POINTS[:, :1],
                 np.stack([POINTS[:, 0], POINTS[:, 0] ** 2], 1)),
}


@pytest.mark.parametrize("name", list(FEATURE_CASES))
def test_linear_feature_options(name):
    """Every feature option gives r_w(x) = phi(x) @ w, and the drift w' = (1 - eta) w + eta
    mean(phi(x)) (NumPy in float64; float32 rounding: 1e-6 relative)."""
    features, w0, x, phi = FEATURE_CASES[name]
    pref = prefs.linear(features, jnp.asarray(w0, jnp.float32), eta=0.3)
    assert isinstance(pref, prefs.Preference) and isinstance(pref, prefs.Linear)
    np.testing.assert_array_equal(np.asarray(pref.init()), np.asarray(w0, np.float32))
    phi, w0 = np.asarray(phi, np.float64), np.asarray(w0, np.float64)
    np.testing.assert_allclose(np.asarray(pref.apply(pref.init(), jnp.asarray(x))), phi @ w0,
                               rtol=1e-6, atol=1e-6)
    moved = np.asarray(pref.drift(pref.init(), jnp.asarray(x)))
    np.testing.assert_allclose(moved, 0.7 * w0 + 0.3 * phi.mean(axis=0), rtol=1e-6, atol=1e-6)
    assert pref.ok() is True  # concrete eta: checked at construction


def test_linear_by_name_through_the_registry():
    pref = prefs.get("linear", features="states", weights0=jnp.asarray(R), eta=0.2)
    assert pref == prefs.linear("states", jnp.asarray(R), eta=0.2)
    assert "linear" in prefs.PREFERENCES
    with pytest.raises(ValueError, match=r"`name` must be one of \['linear'\]; got 'nope'"):
        prefs.get("nope")
    with pytest.raises(ValueError, match=r"invalid options for preference 'linear'"):
        prefs.get("linear", features="states", weights0=jnp.asarray(R), rate=0.2)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: prefs.linear("states", R, eta=1.5), r"`eta` must be in \[0, 1\]; got 1.5",
                 id="eta-above-1"),
    pytest.param(lambda: prefs.linear("states", R, eta=-0.1), r"`eta` must be in \[0, 1\]",
                 id="eta-negative"),
    pytest.param(lambda: prefs.linear("states", R, eta=float("nan")), r"`eta` must be in \[0, 1\]",
                 id="eta-nan"),
    pytest.param(lambda: prefs.linear("states", R, eta=jnp.asarray([0.1, 0.2])),
                 r"`eta` must be a scalar", id="eta-vector"),
    pytest.param(lambda: prefs.linear("states", np.asarray([0.0, np.nan, 1.0, 0, 0, 0])),
                 r"`weights0`", id="weights0-nan"),
    pytest.param(lambda: prefs.linear("states", np.asarray([0.0, np.inf, 1.0, 0, 0, 0])),
                 r"`weights0`", id="weights0-inf"),
    pytest.param(lambda: prefs.linear("states", 1.0), r"`weights0` must be a vector \(F,\)",
                 id="weights0-scalar"),
    pytest.param(lambda: prefs.linear("states", jnp.asarray(2.0)), r"`weights0` must be a vector",
                 id="weights0-0d-array"),
    pytest.param(lambda: prefs.linear("states", np.ones((2, 3))),
                 r"`weights0` must be a vector \(F,\).*got shape \(2, 3\)", id="weights0-matrix"),
    pytest.param(lambda: prefs.linear("states", np.ones(0)), r"`weights0` must be a vector",
                 id="weights0-empty"),
    pytest.param(lambda: prefs.linear(TABLE, np.ones(2)),
                 r"`features` as a table must have shape \(S, 2\).*got shape \(6, 3\)",
                 id="table-width"),
    pytest.param(lambda: prefs.linear(TABLE[0], np.ones(3)),
                 r"`features` as a table must have shape \(S, 3\)", id="table-rank"),
    pytest.param(lambda: prefs.linear("nope", np.ones(3)),
                 r"`features` must be 'states', a \(S, F\) table, or one of", id="features-name"),
    pytest.param(lambda: prefs.linear({"name": "nope"}, np.ones(3)), r"`features`",
                 id="features-dict-name"),
    pytest.param(lambda: prefs.linear(3, np.ones(3)), r"`features`", id="features-type"),
])
def test_linear_checks_name_the_option(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_radial_width_must_match_weights0():
    """A radial map's width (its number of centres) is known when the preference is built, like a
    table's: a mismatch with ``weights0`` must raise a ``ValueError`` naming the option there (as
    the table's ``"`features` as a table must have shape (S, F)"``), not a ``TypeError`` from a
    matrix product at the first ``apply`` (inside the loop's trace)."""
    radial = {"name": "radial", "centers": CENTERS, "bandwidth": 0.7}  # 3 features
    with pytest.raises(ValueError, match=r"`features`|`weights0`"):
        prefs.linear(radial, np.ones(2), eta=0.3)
    with pytest.raises(ValueError, match=r"`features`|`weights0`"):
        prefs.linear(RM.radial(np.asarray(CENTERS), 0.7), np.ones(4), eta=0.3)


def test_equal_options_compare_equal_and_hash_alike():
    a = prefs.linear("states", jnp.asarray(R), eta=0.3)
    b = prefs.linear("states", np.asarray(R), eta=0.3)
    assert a == b and hash(a) == hash(b)
    assert prefs.linear(TABLE, np.ones(3), eta=0.1) == prefs.linear(TABLE.copy(), np.ones(3),
                                                                     eta=0.1)
    assert hash(prefs.linear(TABLE, np.ones(3))) == hash(prefs.linear(TABLE.tolist(), np.ones(3)))
    assert a != prefs.linear("states", jnp.asarray(R), eta=0.4)  # another rate
    assert a != prefs.linear("states", jnp.asarray(R[::-1]), eta=0.3)  # other weights
    assert hash(a) == hash(prefs.linear("states", jnp.asarray(R[::-1]), eta=0.9))  # one structure
    assert a != prefs.linear(np.eye(S) * 2, jnp.asarray(R), eta=0.3)  # other features
    assert a != prefs.linear("coordinates", jnp.asarray(R), eta=0.3)
    assert prefs.linear("coordinates", np.ones(2)) == prefs.linear("coordinates", np.ones(2))
    c = prefs.custom(_apply_table, _halve_toward_mean, {"table": jnp.asarray(R)})
    assert c == prefs.custom(_apply_table, _halve_toward_mean, {"table": jnp.asarray(R)})
    assert c != a


def test_eta_is_an_array_leaf_and_vmappable():
    """eta and weights0 are the leaves (the feature map is static); vmap over eta batches the drift
    of one structure, equal to the drift at each eta (float32 rounding: 1e-6)."""
    pref = prefs.linear("states", jnp.asarray(R), eta=0.3)
    leaves = jax.tree.leaves(pref)
    assert len(leaves) == 2
    assert any(leaf is pref.eta for leaf in leaves) and any(leaf is pref.weights0
                                                           for leaf in leaves)
    assert isinstance(pref.eta, jax.Array) and pref.eta.shape == ()
    x = jnp.asarray(STATES)
    etas = jnp.asarray([0.0, 0.25, 1.0], jnp.float32)
    batched = jax.vmap(lambda e: pref.replace(eta=e).drift(pref.init(), x))(etas)
    for i, e in enumerate([0.0, 0.25, 1.0]):
        one = prefs.linear("states", jnp.asarray(R), eta=e).drift(jnp.asarray(R), x)
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one), rtol=1e-6, atol=1e-7)
    # one linear() builds under jit and vmap with a traced eta
    built = jax.vmap(lambda e: prefs.linear("states", jnp.asarray(R), eta=e).eta)(etas)
    np.testing.assert_array_equal(np.asarray(built), np.asarray(etas))
    assert jax.tree.structure(pref) == jax.tree.structure(pref.replace(eta=jnp.float32(0.9)))


# ------------------------------------------------------------------------------------------------
# 2. The drift rule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("features, w0, x", [
    pytest.param("states", R, np.asarray([0, 0, 1, 5, 5, 5, 2], np.int32), id="states"),
    pytest.param(TABLE, np.asarray([0.5, -1.0, 2.0]), np.asarray([1, 4, 4, 0], np.int32),
                 id="table"),
    pytest.param("coordinates", np.asarray([1.0, -1.0]),
                 np.asarray([[0.5, 1.0], [2.0, -3.0], [0.25, 0.0]], np.float32), id="coordinates"),
])
def test_drift_rule_against_numpy(features, w0, x):
    """drift(w, x) = (1 - eta) w + eta mean(phi(x)) for eta in (0.3, 0.8) (float32 rounding:
    1e-6); eta = 0 keeps w exactly; eta = 1 gives the feature mean (to rounding of the mean)."""
    pref = prefs.linear(features, jnp.asarray(w0, jnp.float32), eta=0.3)
    phi = np.asarray(pref.features(jnp.asarray(x)), np.float64)
    w = np.asarray(w0, np.float64)
    for eta in (0.3, 0.8):
        got = np.asarray(pref.replace(eta=jnp.float32(eta)).drift(pref.init(), jnp.asarray(x)))
        np.testing.assert_allclose(got, (1 - eta) * w + eta * phi.mean(axis=0), rtol=1e-6,
                                   atol=1e-6)
    w32 = jnp.asarray(w0, jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(pref.replace(eta=jnp.float32(0.0)).drift(w32, jnp.asarray(x))), np.asarray(w32))
    np.testing.assert_allclose(
        np.asarray(pref.replace(eta=jnp.float32(1.0)).drift(w32, jnp.asarray(x))),
        phi.mean(axis=0), rtol=1e-6, atol=1e-7)
    # iterated: the weights are an exponential average of the feature means
    w2 = pref.drift(pref.drift(w32, jnp.asarray(x)), jnp.asarray(x[:2]))
    want = 0.49 * w + 0.21 * phi.mean(axis=0) + 0.3 * phi[:2].mean(axis=0)
    np.testing.assert_allclose(np.asarray(w2), want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# 3. In the loop
# ------------------------------------------------------------------------------------------------


def _seen(state, info):
    return {"candidates": info.candidates, "kept": info.kept.samples,
            "kept_rewards": info.kept.rewards, "read": info.preference_rewards,
            "w": state.reward_params, "probs": state.params.probs}


def test_reward_params_follow_the_rule_on_each_generations_candidates():
    """Categorical loop, preference ``linear("states", w0, eta=0.4)``, best-of-k (beta = inf) on
    the preference, ``reward_fn = -r`` as the reference reward:

    * ``reward_params`` row 0 is w0 and row t is (1 - eta) w_{t-1} + eta (state shares of
      generation t's candidates) (float32 rounding: 1e-6);
    * the curator read w_t: ``preference_rewards`` are w_t[x] and every kept sample has the
      largest w_t of its group of k; the kept samples carry ``reward_fn``'s rewards;
    * ``preference_reward_mean`` is the candidates' mean of w_t; the final state holds w_{T-1}
      (the last refit's), the history's last row w_T (the final record's drift)."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=256, k=K)
    eta = 0.4
    w0 = np.asarray([0.2, 0.0, 1.0, 0.4, 0.9, 0.1], np.float32)
    run = jax.jit(sc.run, static_argnames=("model", "reward_fn", "config", "metrics_fn"))
    final, history = run(
        jax.random.key(5), params0, jnp.arange(S), sc.Hyperparams(beta=jnp.inf, real_fraction=0.2),
        model=model, reward_fn=_table(-R), config=config, real_weights=jnp.asarray(P_DATA),
        preference=prefs.linear("states", jnp.asarray(w0), eta=eta), metrics_fn=_seen)
    w = np.asarray(history["reward_params"], np.float64)
    cand = np.asarray(history["candidates"])
    assert w.shape == (4, S) and cand.shape == (4, 256 * K)
    np.testing.assert_array_equal(np.asarray(history["reward_params"]), np.asarray(history["w"]))
    np.testing.assert_array_equal(w[0], w0)
    for t in range(1, 4):
        share = np.bincount(cand[t], minlength=S) / cand.shape[1]
        np.testing.assert_allclose(w[t], (1 - eta) * w[t - 1] + eta * share, rtol=1e-6,
                                   atol=1e-6)
    for t in range(4):
        wt = np.asarray(history["reward_params"][t])
        np.testing.assert_array_equal(np.asarray(history["read"][t]), wt[cand[t]])
        groups = wt[cand[t]].reshape(-1, K)
        np.testing.assert_array_equal(wt[np.asarray(history["kept"][t])], groups.max(axis=1))
        np.testing.assert_array_equal(np.asarray(history["kept_rewards"][t]),
                                      -R[np.asarray(history["kept"][t])])
        np.testing.assert_allclose(float(history["preference_reward_mean"][t]),
                                   wt[cand[t]].mean(), rtol=1e-5)
        np.testing.assert_allclose(float(history["reward_mean"][t]), -R[cand[t]].mean(),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(final.reward_params),
                                  np.asarray(history["reward_params"][2]))
    assert np.all(np.asarray(history["fit_is_finite"]))


def test_eta_zero_is_the_loop_with_the_fixed_reward_bit_for_bit():
    """features = "states", weights0 = r, eta = 0: the curator reads w0[x] = r[x] at every
    generation, so the loop equals ``sc.run`` with ``reward_fn = r[x]`` and no preference: same
    kept samples, kept rewards and params, bit for bit; the weights never move."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=128, k=K)
    kwargs = dict(model=model, reward_fn=_table(R), config=config, default=False,
                  real_weights=jnp.asarray(P_DATA))
    hyper = sc.Hyperparams(beta=2.0, real_fraction=0.2)
    seen = lambda s, i: {k: v for k, v in _seen(s, i).items() if k not in ("w", "read")}
    fixed_final, fixed = sc.run(jax.random.key(6), params0, jnp.arange(S), hyper,
                                metrics_fn=seen, **kwargs)
    final, drifting = sc.run(jax.random.key(6), params0, jnp.arange(S), hyper, metrics_fn=_seen,
                             preference=prefs.linear("states", jnp.asarray(R), eta=0.0),
                             **kwargs)
    for name in ("candidates", "kept", "kept_rewards", "probs"):
        np.testing.assert_array_equal(np.asarray(drifting[name]), np.asarray(fixed[name]),
                                      err_msg=name)
    np.testing.assert_array_equal(np.asarray(final.params.probs),
                                  np.asarray(fixed_final.params.probs))
    np.testing.assert_array_equal(np.asarray(drifting["w"]), np.broadcast_to(R, (4, S)))
    np.testing.assert_array_equal(np.asarray(drifting["read"]),
                                  R[np.asarray(drifting["candidates"])])


# ------------------------------------------------------------------------------------------------
# 4. Exact vs sampled
# ------------------------------------------------------------------------------------------------

ETAS = (0.3, 0.8)
W0 = R  # the reward starts increasing in the state, p0 puts its mass on the low states


def test_categorical_loop_tracks_the_exact_drift_dynamics():
    """S = 6, features "states", w0 = r, eta in (0.3, 0.8), real fraction 0.2 of p_data, k = 4,
    Luce beta = 2, N = 2048, 24 seeds (one program, vmapped over eta and the seeds): the seed
    means of every probability and every weight against ``sc.theory.drift_trajectory`` within
    Z = 5 standard errors plus t * 0.5 / N (module constants). The two rates give trajectories
    the test tells apart, and the fixed reward (eta = 0) another."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=T, num_samples=N, k=K)

    def one(key, eta):
        _, history = sc.run(key, params0, jnp.arange(S), sc.Hyperparams(beta=2.0,
                                                                         real_fraction=0.2),
                            model=model, reward_fn=_table(R), config=config,
                            real_weights=jnp.asarray(P_DATA), default=False,
                            preference=prefs.linear("states", jnp.asarray(W0), eta=eta),
                            metrics_fn=lambda s, i: {"probs": s.params.probs,
                                                     "w": s.reward_params})
        return history

    keys = jax.random.split(jax.random.key(17), SEEDS)
    history = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0)))(
        keys, jnp.asarray(ETAS, jnp.float32))
    t = np.arange(T + 1)[:, None]
    exact_ps = []
    for i, eta in enumerate(ETAS):
        ps, ws = sc.theory.drift_trajectory(jnp.asarray(P0), np.eye(S, dtype=np.float32),
                                            jnp.asarray(W0), eta=eta, num_generations=T, k=K,
                                            beta=2.0, p_data=jnp.asarray(P_DATA),
                                            real_fraction=0.2)
        ps, ws = np.asarray(ps, np.float64), np.asarray(ws, np.float64)
        assert ps.shape == (T + 1, S) and ws.shape == (T + 1, S)
        exact_ps.append(ps)
        for name, exact in (("probs", ps), ("w", ws)):
            got = np.asarray(history[name][i], np.float64)  # (seeds, T + 1, S)
            np.testing.assert_allclose(got[:, 0], np.broadcast_to(exact[0], got[:, 0].shape),
                                       atol=1e-6)
            se = got.std(axis=0, ddof=1) / math.sqrt(SEEDS)
            tolerance = Z * np.maximum(se, 1e-7) + t * BIAS / N
            error = np.abs(got.mean(axis=0) - exact)
            assert np.all(error[1:] <= tolerance[1:]), (eta, name, got.mean(axis=0), exact, se)
    # not vacuous: the rates give different laws, and a fixed reward a third one
    assert np.max(np.abs(exact_ps[0] - exact_ps[1])) > 0.02
    fixed = np.asarray(sc.theory.trajectory(jnp.asarray(P0), jnp.asarray(W0), num_generations=T,
                                            k=K, beta=2.0, p_data=jnp.asarray(P_DATA),
                                            real_fraction=0.2))
    assert np.max(np.abs(exact_ps[1] - fixed)) > 0.02


# ------------------------------------------------------------------------------------------------
# 5. Custom rules and bad input
# ------------------------------------------------------------------------------------------------


def _apply_table(params, x):
    return params["scale"] * params["table"][x]


def _halve_toward_mean(params, samples):
    share = jnp.mean(jax.nn.one_hot(samples, S, dtype=params["table"].dtype), axis=0)
    return {"table": 0.5 * params["table"] + 0.5 * share, "scale": params["scale"] + 1.0}


def test_custom_rule_runs_in_the_loop():
    """A user rule (a dict of params: a table pulled halfway to the candidates' state shares and a
    scale incremented per generation) runs in the loop: ``reward_params`` follows it from the
    recorded candidates and the curator reads ``apply`` (float32 rounding: 1e-6)."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=3, num_samples=64, k=2)
    pref = prefs.custom(_apply_table, _halve_toward_mean,
                        {"table": jnp.asarray(R), "scale": 1.0})
    run = jax.jit(sc.run, static_argnames=("model", "reward_fn", "config", "metrics_fn",
                                           "default"))
    final, history = run(jax.random.key(2), params0, None, sc.Hyperparams(beta=1.0),
                         model=model, reward_fn=_table(R), config=config, preference=pref,
                         metrics_fn=_seen, default=False)
    table = np.asarray(history["w"]["table"], np.float64)
    scale = np.asarray(history["w"]["scale"])
    cand = np.asarray(history["candidates"])
    np.testing.assert_array_equal(scale, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(table[0], R)
    for t in range(1, 4):
        share = np.bincount(cand[t], minlength=S) / cand.shape[1]
        np.testing.assert_allclose(table[t], 0.5 * table[t - 1] + 0.5 * share, rtol=1e-6,
                                   atol=1e-7)
    for t in range(4):
        np.testing.assert_allclose(np.asarray(history["read"][t]), scale[t] * table[t][cand[t]],
                                   rtol=1e-6)
    assert float(final.reward_params["scale"]) == 3.0
    assert np.all(np.asarray(history["fit_is_finite"]))


def _loop(**options):
    model, params0 = _categorical()
    return sc.run(jax.random.key(0), params0, None, sc.Hyperparams(), model=model,
                  reward_fn=_table(R), config=sc.LoopConfig(num_generations=1, num_samples=8, k=2),
                  **options)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: _loop(preference=prefs.linear("states", R), reward_model=RM.tabular(S)),
                 r"`preference` cannot be combined with a `reward_model`", id="with-reward-model"),
    pytest.param(lambda: _loop(preference=prefs.linear("states", R),
                               feedback=RM.feedback(8)),
                 r"`preference` cannot be combined with a `reward_model` or `feedback`",
                 id="with-feedback"),
    pytest.param(lambda: _loop(preference="linear"),
                 r"`preference` must be a selfconsume.preferences preference.*got str",
                 id="a-string"),
    pytest.param(lambda: _loop(preference=RM.tabular(S)),
                 r"`preference` must be a selfconsume.preferences preference.*got Tabular",
                 id="a-reward-model"),
    pytest.param(lambda: prefs.custom("apply", _halve_toward_mean, {}),
                 r"`apply` must be callable; got str", id="custom-apply"),
    pytest.param(lambda: prefs.custom(_apply_table, None, {}), r"`drift` must be callable",
                 id="custom-drift"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_retrain_step_needs_a_state_with_the_preferences_params():
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=1, num_samples=8, k=2)
    state = sc.retrain.init_state(params0, model=model, config=config)
    with pytest.raises(ValueError, match=r"`state` must come from init_state.*preference"):
        sc.retrain_step(jax.random.key(0), state, sc.Hyperparams(), None, model=model,
                        reward_fn=_table(R), config=config,
                        preference=prefs.linear("states", R))
    with_params = sc.retrain.init_state(params0, model=model, config=config,
                                        preference=prefs.linear("states", R))
    np.testing.assert_array_equal(np.asarray(with_params.reward_params), R)


def test_traced_eta_outside_the_unit_interval_poisons_the_loop():
    """Under ``jit`` eta is traced: outside [0, 1] (or NaN) the params and weights are NaN and
    ``fit_is_finite`` False at every generation; inside, the same program runs finite."""
    model, params0 = _categorical()
    config = sc.LoopConfig(num_generations=2, num_samples=16, k=2)

    @jax.jit
    def go(eta):
        final, history = sc.run(jax.random.key(0), params0, None, sc.Hyperparams(), model=model,
                                reward_fn=_table(R), config=config, default=False,
                                preference=prefs.linear("states", jnp.asarray(R), eta=eta),
                                metrics_fn=lambda s, i: {"w": s.reward_params})
        return final, history

    final, history = go(jnp.float32(0.5))
    assert np.all(np.asarray(history["fit_is_finite"]))
    assert np.all(np.isfinite(np.asarray(final.params.probs)))
    for bad in (1.5, -0.1, float("nan")):
        final, history = go(jnp.float32(bad))
        assert not np.any(np.asarray(history["fit_is_finite"])), bad
        assert np.all(np.isnan(np.asarray(final.params.probs)))
        assert np.all(np.isnan(np.asarray(final.reward_params)))
