"""Models and rewards as values, KDE params that keep one shape, the relative covariance floor,
full-precision products, and poisoned fits under ``jit``.

Fixed keys throughout: every assertion always passes or always fails. Every jitted function here
is called with one set of shapes, so each compiles once.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import selfconsume as sc
from selfconsume import models, rewards
from selfconsume.models._common import DEFAULT_MIN_VARIANCE
from tests import model_reference as ref

jax.config.update("jax_numpy_rank_promotion", "raise")

EPS32 = float(np.finfo(np.float32).eps)
N = 64


def _key(i=0):
    return jax.random.key(i)


def _points(n=N, seed=0, dim=2):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _weights(n=N, seed=1):
    return np.random.default_rng(seed).uniform(0.2, 3.0, n).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Factories compare and hash by their options

# name -> (options, other options): two different option sets per family
MODEL_OPTIONS = {
    "categorical": (dict(num_states=5), dict(num_states=6)),
    "gaussian": (dict(dim=2), dict(dim=2, min_variance=1e-8)),
    "gmm": (dict(num_components=8, dim=2), dict(num_components=8, dim=2, em_steps=3)),
    "kde": (dict(dim=2), dict(dim=2, bandwidth="silverman")),
    "flow_matching": (dict(dim=2), dict(dim=2, width=64)),
    "histogram": (dict(bins=8), dict(bins=8, low=-2.0)),
}


def test_every_family_is_covered():
    assert set(MODEL_OPTIONS) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(MODEL_OPTIONS))
def test_models_with_equal_options_are_equal(name):
    options, other = MODEL_OPTIONS[name]
    a, b = models.MODELS[name](**options), models.MODELS[name](**options)
    assert a is not b and a.init is not b.init  # separately built: new closures
    assert a == b and hash(a) == hash(b) and not (a != b)
    assert models.get(name, **options) == a
    assert models.get(a.name, **dict(a.options)) == a  # the options rebuild the model
    c = models.MODELS[name](**other)
    assert a != c and c != a


def test_equal_options_are_normalised():
    assert models.gmm(8, 2) == models.gmm(8, 2, em_steps=10, init_em_steps=10)
    assert models.gmm(8, 2, init_em_steps=None) == models.gmm(8, 2, init_em_steps=10)
    assert models.gmm(8, 2, init_em_steps=0) != models.gmm(8, 2)
    assert models.kde(2) == models.kde(2, bandwidth="scott")
    assert models.kde(2, bandwidth=1) == models.kde(2, bandwidth=1.0)
    assert models.flow_matching(2, activation=jax.nn.gelu) != models.flow_matching(2)


def test_replaced_or_hand_built_models_compare_by_their_functions():
    base = models.gaussian(2)
    broken = base._replace(fit=lambda key, params, data, weights=None: params)
    assert broken.options is None and broken != base
    assert broken != base._replace(fit=lambda key, params, data, weights=None: params)
    assert base._replace(name="renamed") != base  # the name is part of the key
    assert base._replace(name="renamed").options == base.options
    hand = models.GenerativeModel("h", base.init, base.fit, base.sample, base.log_prob)
    assert hand == models.GenerativeModel("h", base.init, base.fit, base.sample, base.log_prob)
    assert hand != models.GenerativeModel("h", base.init, base.fit, base.sample, None)


def test_jit_with_a_static_model_compiles_once_for_equal_models():
    traces = []

    def draw(key, params, model):
        traces.append(model)  # runs once per trace
        return model.sample(key, params, 8)

    f = jax.jit(draw, static_argnames=("model",))
    params = models.GaussianParams(mean=jnp.zeros(2), cov=jnp.eye(2))
    first = f(_key(0), params, model=models.gaussian(2))
    second = f(_key(0), params, model=models.gaussian(2))
    assert len(traces) == 1
    np.testing.assert_array_equal(first, second)
    f(_key(0), params, model=models.gaussian(2, min_variance=1e-3))
    assert len(traces) == 2


class _Classifier:
    """The interface the classifier rewards use; compares by identity."""

    num_classes = 3

    def probabilities(self, x):
        return jax.nn.softmax(jnp.stack([x[:, 0], x[:, 1], -x[:, 0]], axis=1), axis=1)


CLASSIFIER = _Classifier()
DENSITY = models.gaussian(2)
DENSITY_PARAMS = models.GaussianParams(mean=jnp.zeros(2), cov=jnp.eye(2))

# name -> (factory of a reward from a scale, a different reward, samples)
REWARD_CASES = {
    "distance": (lambda s: rewards.distance(jnp.array([1.0, 0.0]), scale=s, radius=0.3),
                 lambda: rewards.distance(jnp.array([1.0, 0.5]), radius=0.3), "points"),
    "linear": (lambda s: rewards.linear(np.array([1.0, -2.0]), scale=s),
               lambda: rewards.linear(np.array([1.0, -2.5])), "points"),
    "table": (lambda s: rewards.table([0.5, 1.5, 2.5, -1.0], scale=s),
              lambda: rewards.table([0.5, 1.5, 2.5, -2.0]), "states"),
    "class_probability": (lambda s: rewards.class_probability(CLASSIFIER, 1, scale=s),
                          lambda: rewards.class_probability(CLASSIFIER, 2), "points"),
    "confidence": (lambda s: rewards.confidence(CLASSIFIER, scale=s),
                   lambda: rewards.confidence(_Classifier()), "points"),
    "log_density": (lambda s: rewards.log_density(DENSITY, DENSITY_PARAMS, scale=s),
                    lambda: rewards.log_density(DENSITY, models.GaussianParams(
                        mean=jnp.zeros(2), cov=jnp.eye(2))), "points"),
}
SAMPLES = {"points": jnp.asarray(_points(16, seed=3)),
           "states": jnp.array([0, 3, 2, 1, 1, 0], jnp.int32)}


def test_every_reward_is_covered():
    assert set(REWARD_CASES) == set(rewards.REWARDS)


@pytest.mark.parametrize("name", sorted(REWARD_CASES))
def test_rewards_with_equal_options_are_equal(name):
    make, other, _ = REWARD_CASES[name]
    a, b = make(2.0), make(2.0)
    assert a is not b and isinstance(a, rewards.Reward) and a.name == name
    assert a == b and hash(a) == hash(b) and not (a != b)
    assert make(3.0) != a and other() != a and other() != make(1.0)
    # array scales compare by dtype and value
    assert make(jnp.float32(2.0)) == make(jnp.float32(2.0))
    assert make(jnp.float32(2.0)) != make(jnp.float16(2.0))


@pytest.mark.parametrize("name", sorted(REWARD_CASES))
def test_rewards_are_exactly_linear_in_the_scale(name):
    """r(scale=s) == s * r(scale=1) bit for bit, also for a traced scale (the loop multiplies a
    reward built with scale 1 by a swept array leaf)."""
    make, _, kind = REWARD_CASES[name]
    x = SAMPLES[kind]
    base = make(1.0)(x)
    scales = jnp.array([0.0, 1.0, -0.5, 3.0, 1e-3], jnp.float32)
    for s in np.asarray(scales):
        np.testing.assert_array_equal(make(float(s))(x), s * base)
    # Traced: the same program shape on both sides (a fused softmax may round differently from
    # an eager one, which is not what this checks).
    traced = jax.jit(jax.vmap(lambda s: make(s)(x)))(scales)
    times = jax.jit(jax.vmap(lambda s: s * make(1.0)(x)))(scales)
    np.testing.assert_array_equal(traced, times)


def test_jit_with_a_static_reward_compiles_once_for_equal_rewards():
    traces = []

    def mean_reward(x, reward_fn):
        traces.append(reward_fn)
        return jnp.mean(reward_fn(x))

    f = jax.jit(mean_reward, static_argnames=("reward_fn",))
    x = SAMPLES["points"]
    first = f(x, reward_fn=rewards.distance(np.array([1.0, 0.0]), scale=2.0))
    second = f(x, reward_fn=rewards.distance(jnp.array([1.0, 0.0]), scale=2.0))
    assert len(traces) == 1 and first == second
    f(x, reward_fn=rewards.distance(np.array([1.0, 0.0]), scale=2.5))
    assert len(traces) == 2


# ------------------------------------------------------------------------------------------------
# KDE: conform pads with zero-weight rows

KDE = models.kde(2)
KDE_INIT = jax.jit(KDE.init)
KDE_SAMPLE = jax.jit(KDE.sample, static_argnums=2)
KDE_LOG_PROB = jax.jit(KDE.log_prob)


def test_only_kde_has_conform():
    for name, (options, _) in MODEL_OPTIONS.items():
        assert (models.MODELS[name](**options).conform is None) == (name != "kde")


@pytest.mark.parametrize("rows", [N + 1, N + 16, 4 * N])
def test_padded_kde_is_the_same_distribution(rows):
    params = KDE_INIT(_key(), _points(), _weights())
    like = jax.eval_shape(KDE.fit, _key(), params, jnp.zeros((rows, 2)), jnp.ones(rows))
    padded = KDE.conform(params, like)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), padded) == jax.tree.map(
        lambda a: (a.shape, a.dtype), like)
    np.testing.assert_array_equal(padded.weights[N:], 0.0)
    # Same key: the same training points are drawn and the same noise added, bit for bit.
    np.testing.assert_array_equal(KDE_SAMPLE(_key(5), padded, 4096),
                                  KDE_SAMPLE(_key(5), params, 4096))
    # The log-densities are the same sums of the same terms plus exact zeros; XLA may group a
    # reduction differently for another length, so allow a few float32 ulps (rtol 1e-6).
    y = _points(200, seed=9) * 1.5
    np.testing.assert_allclose(KDE_LOG_PROB(padded, y), KDE_LOG_PROB(params, y), rtol=1e-6)
    # ... and the same as the slow reference mixture over the positive-weight points.
    np.testing.assert_allclose(KDE_LOG_PROB(padded, y),
                               ref.kde_log_prob(y, padded.points, padded.weights, padded.cov),
                               rtol=1e-5, atol=1e-5)  # float32 whitened distances


def test_conform_refuses_to_shrink_and_checks_like():
    params = KDE_INIT(_key(), _points(), _weights())
    like = jax.eval_shape(KDE.fit, _key(), params, jnp.zeros((N - 1, 2)), None)
    with pytest.raises(ValueError, match=r"shape \(64, 2\) to the shape \(63, 2\)"):
        KDE.conform(params, like)
    with pytest.raises(ValueError, match="`like` must be KDEParams"):
        KDE.conform(params, models.GaussianParams(jnp.zeros(2), jnp.eye(2)))
    bad = jax.eval_shape(models.kde(3).fit, _key(), models.kde(3).init(_key(), _points(dim=3)),
                         jnp.zeros((N + 1, 3)), None)
    with pytest.raises(ValueError, match=r"`like.points` must have shape"):
        KDE.conform(params, bad)
    assert KDE.conform(params, jax.eval_shape(lambda: params)).points.shape == (N, 2)


def test_kde_loop_with_real_data_keeps_one_shape():
    """The loop's pattern: params0 from the N real points, every refit on N real + n kept
    points; conform once and lax.scan runs (without it the carry changes shape)."""
    real, n, k = _points(), 32, 4
    reward = rewards.distance(np.array([1.0, 0.0]))
    params0 = KDE.init(_key(), real)
    weights = jnp.concatenate([jnp.full((N,), 0.5 / N), jnp.full((n,), 0.5 / n)])

    def step(params, key):
        key_sample, key_curate = jax.random.split(key)
        cand = KDE.sample(key_sample, params, n * k)
        kept = sc.curate(key_curate, cand, reward(cand), k=k, beta=jnp.inf)
        new = KDE.fit(key, params, jnp.concatenate([real, kept.samples]), weights)
        return new, jnp.mean(reward(kept.samples))

    like = jax.eval_shape(step, params0, _key())[0]
    assert like.points.shape == (N + n, 2)
    with pytest.raises(TypeError):  # the carry changes shape: what conform is for
        jax.lax.scan(step, params0, jax.random.split(_key(1), 3))
    start = KDE.conform(params0, like)
    final, curve = jax.jit(lambda p: jax.lax.scan(step, p, jax.random.split(_key(1), 5)))(start)
    assert final.points.shape == (N + n, 2) and np.all(np.isfinite(curve))
    assert curve[-1] > curve[0]  # best-of-4 moves the kept samples towards the reward


# ------------------------------------------------------------------------------------------------
# The relative covariance floor: a collapse follows the unfloored curve


def _collapse(dim, **options):
    """A Gaussian refitted each generation on 16 best-of-4 samples (distance reward), 20
    generations; returns the fitted covariances, the float64 unfloored reference MLE of the
    same kept samples, and the recorded data scale."""
    model = models.gaussian(dim, **options)
    reward = rewards.distance(jnp.full((dim,), 0.5))
    params0 = model.init(_key(), jax.random.normal(_key(dim), (64, dim)))

    def step(params, key):
        key_sample, key_curate = jax.random.split(key)
        cand = model.sample(key_sample, params, 64)
        kept = sc.curate(key_curate, cand, reward(cand), k=4, beta=jnp.inf)
        new = model.fit(key, params, kept.samples)
        return new, (new.cov, kept.samples)

    _, (covs, kept) = jax.jit(lambda p: jax.lax.scan(step, p, jax.random.split(_key(1), 20)))(
        params0)
    return np.asarray(covs, np.float64), ref.collapse_variances(kept), float(params0.data_scale)


# Relative error allowed on each covariance entry (scaled by the mean variance): the floor's
# 100 * eps32 = 1.2e-5, its relative part 1e-15 / 1e-10 = 1e-5 at the lowest compared variance,
# and float32 sums of 16 centred squares (~1e-6) and the rounding of the mean ((eps * 0.5)^2 /
# 1e-10 ~ 1e-5): below 5e-5; 1e-4 leaves room. The former absolute floor 1e-6 was off by 1e-2
# to 10x over the same range.
COLLAPSE_RTOL = 1e-4


@pytest.mark.parametrize("dim", [1, 2])
def test_collapse_curve_matches_the_unfloored_reference(dim):
    covs, reference, s0 = _collapse(dim)
    variance = np.trace(reference, axis1=1, axis2=2) / dim
    compared = variance >= 1e-10 * s0
    assert compared[0] and np.min(variance[compared]) < 1e-9 * s0  # the curve really collapses
    err = np.max(np.abs(covs - reference), axis=(1, 2)) / variance
    assert np.all(err[compared] < COLLAPSE_RTOL), (variance / s0, err)
    assert np.all(np.isfinite(covs))  # and past the compared range it stays finite


def test_an_absolute_size_floor_fails_the_collapse_test():
    """The test has teeth: min_variance = 1e-6 (about the former absolute floor, s0 ~ 1)."""
    covs, reference, s0 = _collapse(1, min_variance=1e-6)
    assert 0.3 < s0 < 3
    variance = reference[:, 0, 0]
    err = np.abs(covs[:, 0, 0] - variance) / variance
    assert np.max(err[variance >= 1e-10 * s0]) > 1.0


def test_data_scale_is_recorded_by_init_and_carried_by_fit():
    model = models.gaussian(2)
    x, w = _points(), _weights()
    params = model.init(_key(), x, w)
    np.testing.assert_allclose(params.data_scale, ref.data_scale(x, w), rtol=1e-5)
    refit = model.fit(_key(), params, x * 1e-3, w)
    assert refit.data_scale == params.data_scale
    # degenerate data: identical points (|x|^2 / d), all at the origin (1)
    point = np.full((5, 2), 3.0, np.float32)
    assert float(model.init(_key(), point).data_scale) == pytest.approx(9.0)
    assert float(model.init(_key(), 0 * point).data_scale) == 1.0
    assert np.all(np.isfinite(np.linalg.cholesky(model.init(_key(), 0 * point).cov)))


def _specs(tree):
    return jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), tree)


@pytest.mark.parametrize("x64", [False, True])
def test_hand_built_params_have_the_shapes_fit_returns(x64):
    """data_scale defaults to 1 in the params' dtype and batch shape: the loop's carry keeps
    its types, and stacked hand-built params vmap."""
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        x = jnp.asarray(_points(), dtype)
        cases = [
            (models.gaussian(2), models.GaussianParams(mean=jnp.zeros(2, dtype),
                                                       cov=jnp.eye(2, dtype=dtype))),
            (models.gmm(2, 2), models.GMMParams(weights=jnp.full(2, 0.5, dtype),
                                                means=jnp.zeros((2, 2), dtype),
                                                covs=jnp.stack([jnp.eye(2, dtype=dtype)] * 2))),
            (models.kde(2), models.KDEParams(points=x, weights=jnp.full(N, 1.0 / N, dtype),
                                             cov=jnp.eye(2, dtype=dtype))),
        ]
        for model, params in cases:
            assert params.data_scale.shape == () and params.data_scale.dtype == dtype
            assert float(params.data_scale) == 1.0
            like = jax.eval_shape(model.fit, _key(), params, x, jnp.ones(N, dtype))
            assert _specs(like) == _specs(params), model.name
    batched = models.GaussianParams(mean=jnp.zeros((3, 2)), cov=jnp.broadcast_to(jnp.eye(2),
                                                                               (3, 2, 2)))
    assert batched.data_scale.shape == (3,)
    draws = jax.vmap(models.gaussian(2).sample, in_axes=(None, 0, None))(_key(), batched, 4)
    assert draws.shape == (3, 4, 2)
    assert models.GaussianParams(np.zeros(2), np.eye(2)).data_scale.dtype == np.float64


def test_kde_floor_is_relative_to_the_kernel():
    """Sigma_h = h^2 (cov + delta I), delta = 100 eps tr(cov)/d + min_variance * s0 (x64)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 2)) * np.array([1.0, 1e-3])
    w = rng.uniform(0.5, 1.5, 50)
    with jax.enable_x64(True):
        params = models.kde(2, min_variance=1e-4).init(_key(), jnp.asarray(x), jnp.asarray(w))
        wn = w / w.sum()
        cov = np.cov(x.T, aweights=wn)  # unbiased, as scipy
        n_eff = 1.0 / np.sum(wn**2)
        h2 = n_eff ** (-2.0 / 6)
        delta = 100 * np.finfo(np.float64).eps * np.trace(cov) / 2 + 1e-4 * ref.data_scale(x, w)
        np.testing.assert_allclose(params.cov, h2 * (cov + delta * np.eye(2)), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Products that feed densities, likelihoods and EM statistics run at full precision


def _dot_precisions(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn.params["precision"]
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _dot_precisions(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _dot_precisions(sub)


@pytest.mark.parametrize("model", [models.gaussian(3), models.gmm(2, 3), models.gmm(2, 10),
                                   models.kde(3)], ids=["gaussian", "gmm", "gmm-d10", "kde"])
def test_every_product_requests_highest_precision(model):
    dim = dict(model.options)["dim"]
    x = _points(32, dim=dim)
    params = jax.eval_shape(model.init, _key(), x, None)
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    programs = [jax.make_jaxpr(model.init)(_key(), x, _weights(32)),
                jax.make_jaxpr(model.fit)(_key(), params, x, _weights(32)),
                jax.make_jaxpr(model.log_prob)(params, x),
                jax.make_jaxpr(lambda k, p: model.sample(k, p, 16))(_key(), params)]
    found = [p for program in programs for p in _dot_precisions(program.jaxpr)]
    assert found  # the walk sees the products
    highest = jax.lax.Precision.HIGHEST
    assert all(p is not None and all(q == highest for q in
                                     (p if isinstance(p, tuple) else (p,))) for p in found), found


# ------------------------------------------------------------------------------------------------
# Traced value problems poison the fit


def _family_cases():
    flow = models.flow_matching(2, width=4, depth=1, time_frequencies=1, batch_size=8,
                                init_steps=1, steps=1)
    continuous = _points()
    return {
        "categorical": (models.categorical(5), np.arange(N, dtype=np.int32) % 5),
        "gaussian": (models.gaussian(2), continuous),
        "gmm": (models.gmm(3, 2, em_steps=2), continuous),
        "kde": (models.kde(2), continuous),
        "flow_matching": (flow, continuous),
        "histogram": (models.histogram(6, dim=2), continuous),
    }


FAMILY_CASES = _family_cases()


def _bad_weights():
    w = _weights()
    negative, nan, inf = w.copy(), w.copy(), w.copy()
    negative[3] = -0.5
    nan[5] = np.nan
    inf[7] = np.inf
    return {"negative": negative, "nan": nan, "inf": inf, "zero": np.zeros_like(w)}


def _bad_data(name, data):
    if name == "categorical":
        bad = data.copy()
        bad[4] = 7  # a state outside [0, 5)
        return {"out-of-range": bad}
    nan, inf = data.copy(), data.copy()
    nan[4, 1] = np.nan
    inf[9, 0] = -np.inf
    return {"nan": nan, "inf": inf}


def _all_nan(tree):
    leaves = [leaf for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return bool(leaves) and all(np.all(np.isnan(leaf)) for leaf in leaves)


def test_every_family_is_checked_for_poison():
    assert set(FAMILY_CASES) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(FAMILY_CASES))
def test_traced_value_problems_poison_init_and_fit(name):
    model, data = FAMILY_CASES[name]
    init, fit = jax.jit(model.init), jax.jit(model.fit)
    w = _weights()
    good = init(_key(), data, w)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(good)
               if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact))
    refit = fit(_key(1), good, data, w)
    assert not _all_nan(refit) and all(
        np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(refit)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact))
    for case, bad in _bad_weights().items():
        assert _all_nan(init(_key(), data, bad)), (name, "init", case)
        assert _all_nan(fit(_key(1), good, data, bad)), (name, "fit", case)
    for case, bad in _bad_data(name, data).items():
        assert _all_nan(init(_key(), bad, w)), (name, "init", case)
        assert _all_nan(fit(_key(1), good, bad, w)), (name, "fit", case)
    assert init._cache_size() == 1 and fit._cache_size() == 1  # values only: one program each
    # Outside jit the same problems raise.
    with pytest.raises(ValueError):
        model.fit(_key(1), good, data, _bad_weights()["negative"])


@pytest.mark.parametrize("name", ["gaussian", "gmm", "kde"])
def test_poisoned_params_stay_nan_in_the_next_fit(name):
    """The families whose fit uses the previous params (at least their data scale)."""
    model, data = FAMILY_CASES[name]
    poisoned = jax.jit(model.init)(_key(), data, _bad_weights()["negative"])
    assert _all_nan(jax.jit(model.fit)(_key(), poisoned, data, _weights()))


def test_traced_learning_rate_problems_poison_flow_params():
    flow, data = FAMILY_CASES["flow_matching"]
    from selfconsume.models.flow_matching import with_learning_rate

    params = jax.jit(flow.init)(_key(), data)
    set_lr = jax.jit(with_learning_rate)
    assert not _all_nan(set_lr(params, jnp.float32(1e-3)))
    for bad in (0.0, -1.0, math.nan, math.inf):
        assert _all_nan(set_lr(params, jnp.float32(bad))), bad


def test_default_min_variance_is_documented():
    import inspect

    for factory in (models.gaussian, models.gmm, models.kde):
        assert inspect.signature(factory).parameters["min_variance"].default == \
            DEFAULT_MIN_VARIANCE
        assert "relative" in factory.__doc__
