"""Tests of the flow-matching family (selfconsume.models.flow_matching).

Compiling dominates on CPU, so the tests share a few jitted programs built once at import: the
default model ``BIG`` (the quality bar) and a small model ``SMALL`` (width 32, depth 2, batches of
128, 50 steps per fit) for everything that only needs a working model (training, vmap, the loop,
the sweep), always called with the same shapes. Densities are checked on networks built in NumPy
(no compilation). Fixed keys throughout: each assertion always passes or always fails; tolerances
are stated with their reasons.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

import selfconsume as sc
from selfconsume import models
from selfconsume.models.flow_matching import (FlowParams, VelocityMLP, divergence, flow_matching,
                                              flow_matching_loss, velocity, with_learning_rate)

jax.config.update("jax_numpy_rank_promotion", "raise")

BIG = flow_matching(2)  # the defaults: width 128, depth 3, 2000 init steps, 200 per fit
SMALL = flow_matching(2, width=32, depth=2, batch_size=128, steps=50, init_steps=100)

TRACES = {"small_fit": 0}


def _counted_small_fit(key, params, data, weights):
    TRACES["small_fit"] += 1  # runs once per trace, not per call
    return SMALL.fit(key, params, data, weights)


BIG_INIT = jax.jit(BIG.init)
BIG_SAMPLE = jax.jit(BIG.sample, static_argnums=2)
SMALL_INIT = jax.jit(SMALL.init)
SMALL_FIT = jax.jit(_counted_small_fit)
SMALL_SAMPLE = jax.jit(SMALL.sample, static_argnums=2)
LOSS = jax.jit(flow_matching_loss, static_argnames="num_points")


def _key(i=0):
    return jax.random.key(i)


def _ring(n, seed):
    return sc.data.gaussian_ring(_key(seed), n)


RING, CENTERS = _ring(20_000, 0)
SMALL_RING = RING[:1000]
SMALL_ONES = jnp.ones((1000,), jnp.float32)  # SMALL_FIT always gets weights: one compilation


@pytest.fixture(scope="module")
def big_params():
    """The default model trained from scratch (``init``: 2000 Adam steps) on the 20k-point ring,
    and the wall time of that (already compiled) training."""
    compiled = BIG_INIT.lower(_key(3), RING).compile()
    start = time.perf_counter()
    params = jax.block_until_ready(compiled(_key(3), RING))
    return params, time.perf_counter() - start


@pytest.fixture(scope="module")
def small_params():
    """SMALL after ``init`` (100 steps); the learning rate passed as an array, as in the vmap
    test, so that both share one compilation."""
    return SMALL_INIT(_key(1), SMALL_RING, learning_rate=jnp.float32(2e-3))


# ------------------------------------------------------------------------------------------------
# Quality on the 8-mode ring


def test_quality_on_the_ring(big_params):
    params, seconds = big_params
    # 2000 steps of batch 256 on 20k points take ~3 s on an idle 2-core CPU; the bound only
    # catches an O(batch x N) minibatch sampler or a Python loop over steps (minutes).
    assert seconds < 60, seconds
    samples = BIG_SAMPLE(_key(4), params, 2000)
    assert samples.shape == (2000, 2) and samples.dtype == jnp.float32
    shares = np.asarray(sc.metrics.mode_shares(samples, CENTERS))
    # Each mode holds 1/8 = 12.5%; with 2000 samples a share's standard error is 0.74%, so
    # [8%, 17%] allows ~6 standard errors of sampling noise beyond the model's own imbalance
    # (measured shares 9.9% .. 14.2%).
    assert np.all((shares >= 0.08) & (shares <= 0.17)), shares

    # Squared MMD with a Gaussian kernel of bandwidth 0.1 (twice a mode's std): the median
    # heuristic (~1.4, the ring's diameter) hardly tells a ring from a Gaussian blob. Calibration
    # at this bandwidth, 2000 vs 2000 points against the same held-out set: another ring sample
    # |MMD^2| < 6e-4 (three draws); a ring with modes 1.5x too wide 3.5e-3, 2x too wide 1.3e-2;
    # the ring without one of its modes 1.2e-2; the Gaussian fit 7.9e-2. The threshold 1e-2 thus
    # accepts modes up to ~1.8x too wide and rejects a dropped mode; the model scores 5.4e-3.
    mmd = jax.jit(lambda a, b: sc.metrics.mmd_rbf(a, b, bandwidth=0.1))
    holdout, _ = _ring(2000, 1)
    holdout2, _ = _ring(2000, 2)
    gaussian = models.gaussian(2)
    wrong = gaussian.sample(_key(5), gaussian.init(_key(5), RING), 2000)
    assert abs(float(mmd(holdout2, holdout))) < 2e-3  # the noise floor of the estimate
    assert float(mmd(wrong, holdout)) > 5e-2  # the metric separates a clearly wrong model
    assert float(mmd(samples, holdout)) < 1e-2

    # Held-out log-likelihood: its gap to that of the true mixture estimates KL(p_data || model)
    # (on the same 2000 points the gap's standard error is ~0.01). Measured: truth 1.06 nats,
    # model 0.83 (KL ~0.23), while the Gaussian fit scores -2.15; a model within 0.5 nats of the
    # truth has the modes at the right places and widths.
    diff = np.asarray(holdout, np.float64)[:, None, :] - np.asarray(CENTERS, np.float64)[None]
    log_true = (np.logaddexp.reduce(-0.5 * np.sum(diff ** 2, axis=-1) / 0.05 ** 2, axis=1)
                - math.log(8) - math.log(2 * math.pi * 0.05 ** 2))
    log_model = np.asarray(jax.jit(BIG.log_prob)(params, holdout), np.float64)
    gap = log_true.mean() - log_model.mean()
    assert -0.05 < gap < 0.5, (log_true.mean(), log_model.mean())


# ------------------------------------------------------------------------------------------------
# Training: loss, warm start, weights, learning rate


def test_loss_decreases_over_training(small_params):
    losses = [float(LOSS(_key(9), small_params, SMALL_RING, num_points=8192))]
    train_losses = [float(small_params.loss)]
    params = small_params
    for i in range(8):
        params = SMALL_FIT(_key(10 + i), params, SMALL_RING, SMALL_ONES)
        losses.append(float(LOSS(_key(9), params, SMALL_RING, num_points=8192)))
        train_losses.append(float(params.loss))
    # params.loss is the mean minibatch loss of the last fit: the init's 100 steps start from an
    # untrained network (loss ~4), so their mean (3.7) is well above that of later fits (~3.1).
    assert train_losses[0] > max(train_losses[1:]) + 0.2, train_losses
    assert np.all(np.isfinite(train_losses))
    # The held-out estimate uses the same 8192 triples for every params (common random numbers).
    # Measured 3.205 after the 100 init steps, then a noisy descent (fit-to-fit jitter ~0.01 at
    # this constant learning rate) to 3.127 after 400 more steps; the irreducible loss (the
    # conditional variance of z1 - z0) is ~2.6. Requiring a drop of 0.04 leaves ~4x the jitter.
    assert losses[-1] < losses[0] - 0.04, losses


def test_fit_warm_starts(small_params):
    p0 = small_params
    assert int(p0.opt_state.count) == 100  # init_steps
    p1 = SMALL_FIT(_key(2), p0, SMALL_RING, SMALL_ONES)
    # Adam's step count (and moments) continue from p0 instead of restarting: 100 + 50 steps.
    assert int(p1.opt_state.count) == 150
    assert int(p1.opt_state.inner_state[0].count) == 150
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), p0.network, p1.network)
    assert all(jax.tree.leaves(changed))
    # The standardisation is kept, so the network keeps its meaning across fits.
    np.testing.assert_array_equal(p1.mean, p0.mean)
    np.testing.assert_array_equal(p1.std, p0.std)
    # Same data, common random numbers: the continued fit lowers the loss.
    assert float(LOSS(_key(9), p1, SMALL_RING)) < float(LOSS(_key(9), p0, SMALL_RING))
    # The starting point is p0.network: at a learning rate of 1e-9 an Adam step moves each
    # weight by at most ~1e-9, so 50 steps stay within 1e-6 of p0 (a fresh network would not).
    p_tiny = SMALL_FIT(_key(2), with_learning_rate(p0, 1e-9), SMALL_RING, SMALL_ONES)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), p0.network, p_tiny.network)
    assert max(jax.tree.leaves(moved)) < 1e-6


def test_weights_select_a_mode(small_params):
    """Fits on weights concentrated on mode 0 move almost all the samples there (the
    standardisation is kept from the uniform init, so only the weighting can do this)."""
    near0 = (np.asarray(sc.metrics.nearest_mode(SMALL_RING, CENTERS)) == 0).astype(np.float32)
    params = small_params
    for i in range(3):
        params = SMALL_FIT(_key(20 + i), params, SMALL_RING, near0)
    shares = np.asarray(sc.metrics.mode_shares(SMALL_SAMPLE(_key(5), params, 1000), CENTERS))
    # Measured 0.98 after 100 weighted steps and ~1.0 after 150; the uniform model has 12.5%.
    assert shares[0] > 0.9, shares


def test_learning_rate_is_an_array_leaf(big_params, small_params):
    assert float(big_params[0].learning_rate) == pytest.approx(2e-3)  # the factory's default
    params = small_params
    assert params.learning_rate.shape == ()
    fast = with_learning_rate(params, 5e-3)
    assert jax.tree.structure(fast) == jax.tree.structure(params)
    out_default = SMALL_FIT(_key(6), params, SMALL_RING, SMALL_ONES)
    traces = TRACES["small_fit"]
    assert traces == 1  # every test calls SMALL_FIT with the same shapes and dtypes
    out_fast = SMALL_FIT(_key(6), fast, SMALL_RING, SMALL_ONES)
    assert TRACES["small_fit"] == traces  # another learning rate: no new trace
    assert float(out_fast.learning_rate) == pytest.approx(5e-3)
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), out_default.network,
                        out_fast.network)
    assert max(jax.tree.leaves(diff)) > 1e-4  # the new learning rate was used


def test_vmap_over_seeds_and_learning_rates_equals_a_loop(small_params):
    """8 seeds, each with its own learning rate: init (the learning rate a traced, vmapped
    argument) and fit (the learning rate read from the state), each in one compiled call."""
    del small_params  # only to compile SMALL_INIT with an array learning rate first
    keys = jax.random.split(_key(8), 8)
    lrs = jnp.linspace(1e-3, 4e-3, 8, dtype=jnp.float32)
    traces = []

    def init(key, lr):
        traces.append("init")
        return SMALL.init(key, SMALL_RING, learning_rate=lr)

    def fit(key, params, data, weights):
        traces.append("fit")
        return SMALL.fit(key, params, data, weights)

    inits = jax.jit(jax.vmap(init))(keys, lrs)
    fits = jax.jit(jax.vmap(fit, in_axes=(0, 0, None, None)))(keys, inits, SMALL_RING, None)
    assert traces == ["init", "fit"]  # one trace each for the 8 seeds
    assert fits.mean.shape == (8, 2)
    np.testing.assert_allclose(fits.learning_rate, lrs)
    for i in range(8):
        p = SMALL_INIT(keys[i], SMALL_RING, learning_rate=lrs[i])
        f = SMALL_FIT(keys[i], p, SMALL_RING, SMALL_ONES)
        # float32 rounding: the batched and single programs may order reductions differently;
        # measured differences ~1e-7 after 150 Adam steps.
        for batched, looped in [(inits, p), (fits, f)]:
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5),
                         batched, looped)
    kernels = fits.network["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])  # the seeds differ


# ------------------------------------------------------------------------------------------------
# Densities


def _identity(u):
    return u


def _hand_params(module, *, seed, dtype, mean, std, scale=1.0):
    """FlowParams around a random network built in NumPy (no compilation): lecun-normal kernels,
    small random biases, the output layer scaled by ``scale``. ``sample``, ``log_prob``,
    ``velocity`` and ``divergence`` read only ``network``, ``mean``, ``std`` and ``module``."""
    rng = np.random.default_rng(seed)
    sizes = [module.dim + 2 * module.time_frequencies] + [module.width] * module.depth
    sizes.append(module.dim)
    layers = {}
    for i in range(module.depth + 1):
        kernel = rng.normal(size=(sizes[i], sizes[i + 1])) / math.sqrt(sizes[i])
        layers[f"Dense_{i}"] = {
            "kernel": jnp.asarray(kernel * (scale if i == module.depth else 1.0), dtype),
            "bias": jnp.asarray(0.1 * rng.normal(size=sizes[i + 1]), dtype)}
    return FlowParams(network={"params": layers}, opt_state=(), mean=jnp.asarray(mean, dtype),
                      std=jnp.asarray(std, dtype), loss=jnp.zeros((), dtype),
                      module=module.clone(param_dtype=dtype))


def _time_features(t, num):
    """The documented time features (sin w t, cos w t), w geometric in [1, 8]."""
    omega = np.geomspace(1.0, 8.0, num)
    return np.concatenate([np.sin(omega * t), np.cos(omega * t)])


def test_log_prob_of_a_linear_field_matches_the_exact_gaussian():
    """With the identity activation the MLP is affine in z: v(z, t) = A z + c(t), whose flow is
    z1 = e^A z0 + m, m = int_0^1 e^{A(1-s)} c(s) ds, so p(x) is Gaussian and known exactly."""
    kwargs = dict(width=8, depth=2, time_frequencies=4, activation=_identity)
    mean, std = np.array([3.0, -1.0]), np.array([2.0, 0.5])
    params = _hand_params(VelocityMLP(dim=2, **kwargs), seed=0, dtype=jnp.float32, mean=mean,
                          std=std, scale=0.5)
    layers = params.network["params"]
    k = [np.asarray(layers[f"Dense_{i}"]["kernel"], np.float64) for i in range(3)]
    b = [np.asarray(layers[f"Dense_{i}"]["bias"], np.float64) for i in range(3)]
    a = (k[0][:2] @ k[1] @ k[2]).T  # row-vector layers: v = z K0[:2] K1 K2 + ...
    assert 0.1 < np.linalg.norm(a, 2) < 1.0  # a non-trivial flow, mild enough for 32 steps

    def c(t):
        return ((_time_features(t, 4) @ k[0][2:] + b[0]) @ k[1] + b[1]) @ k[2] + b[2]

    s = np.linspace(0.0, 1.0, 2001)  # Simpson's rule on a smooth integrand: error < 1e-10
    step = expm(a * (s[1] - s[0]))  # e^{A(1 - s_i)} = step^(2000 - i), built from i = 2000 down
    propagators = [np.eye(2)]
    for _ in range(len(s) - 1):
        propagators.append(step @ propagators[-1])
    integrand = np.stack([p @ c(si) for p, si in zip(propagators[::-1], s)])
    weights = np.ones_like(s)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    m = (weights @ integrand) * (s[1] - s[0]) / 3.0

    x = np.random.default_rng(1).normal(size=(64, 2)) * std + mean  # |z1| up to ~3
    z1 = (x - mean) / std
    z0 = np.linalg.solve(expm(a), (z1 - m).T).T
    exact = (-0.5 * np.sum(z0 ** 2, axis=1) - math.log(2 * math.pi) - np.trace(a)
             - np.sum(np.log(std)))
    errors = {}
    for num_steps in (32, 128):
        model = flow_matching(2, num_sample_steps=num_steps, **kwargs)
        got = np.asarray(jax.jit(model.log_prob)(params, jnp.asarray(x, jnp.float32)))
        errors[num_steps] = float(np.max(np.abs(got - exact)))
    # Heun's global error is ~h^2 |z'''| / 6 with z''' = A^3 z + A^2 c + A c' + c'': the forcing
    # c(t) oscillates at up to 8 rad per unit time, so |c''| ~ 10 and the error of log p at
    # h = 1/32 is ~1e-3 (measured 1.5e-3). It is the solver's: 4x the steps cut it ~16x (second
    # order; measured 9e-5 at 128 steps), while a wrong trace sign, time direction or
    # normalisation term would give errors of order 0.1 to 1 that do not shrink.
    assert errors[32] < 3e-3, errors
    assert errors[128] < 2e-4 and errors[32] / errors[128] > 10, errors
    # The exact trace of an affine field is tr(A) everywhere, at any time.
    div = jax.jit(divergence)(params, jnp.asarray(x[:4], jnp.float32), jnp.full(4, 0.3))
    np.testing.assert_allclose(div, np.trace(a), rtol=1e-5, atol=1e-6)


def test_density_integrates_to_one(small_params):
    """exp(log_prob) of the trained small model summed over a grid covering its support."""
    grid = np.linspace(-2.5, 2.5, 201, dtype=np.float32)
    cell = float(grid[1] - grid[0])
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = jax.jit(SMALL.log_prob)(small_params, points)
    assert log_p.shape == (points.shape[0],) and np.all(np.isfinite(np.asarray(log_p)))
    total = float(jnp.sum(jnp.exp(log_p))) * cell * cell
    samples = SMALL_SAMPLE(_key(6), small_params, 1000)
    assert float(jnp.max(jnp.abs(samples))) < 2.5  # the grid holds the samples' support
    # Riemann sum of a smooth density on cells of 0.025 (measured total 1.00004), mass outside
    # the grid (none of 1000 samples) and the O(h^2) solver error of log p: 2% covers all three.
    assert abs(total - 1.0) < 0.02, total


def test_trace_is_exact(x64):
    """The jacfwd trace against central finite differences of the velocity, in float64."""
    params = _hand_params(VelocityMLP(dim=2, width=16, depth=2, time_frequencies=8), seed=1,
                          dtype=jnp.float64, mean=[0.5, -0.5], std=[0.7, 1.3])
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 2)))
    t = jnp.linspace(0.1, 0.9, 5)
    eps = 1e-5

    def both(params, x, t):
        fd = 0.0
        for i in range(2):
            e = jnp.zeros(2).at[i].set(eps)[None, :]
            fd = fd + (velocity(params, x + e, t)[:, i] - velocity(params, x - e, t)[:, i]) / (
                2 * eps)
        return divergence(params, x, t), fd

    div, fd = jax.jit(both)(params, x, t)
    assert div.dtype == jnp.float64
    # Central differences: truncation ~eps^2 |v'''| ~ 1e-10, rounding ~1e-16 / eps ~ 1e-11.
    np.testing.assert_allclose(div, fd, rtol=1e-7, atol=1e-8)
    assert np.all(np.abs(np.asarray(div)) > 1e-3)  # not vacuous


def test_log_prob_is_none_in_high_dimension():
    assert flow_matching(9).log_prob is None
    assert flow_matching(9, log_prob_max_dim=9).log_prob is not None
    assert flow_matching(8).log_prob is not None


# ------------------------------------------------------------------------------------------------
# Inside the loop


def _loop(key, params0, real_fraction):
    config = sc.LoopConfig(num_generations=2, num_samples=128, k=4)
    reward = sc.rewards.distance(CENTERS[0], scale=4.0, radius=0.1)
    hyper = sc.Hyperparams(beta=1.0, real_fraction=real_fraction)
    return sc.run(key, params0, SMALL_RING, hyper, model=SMALL, reward_fn=reward, config=config)


def test_run(small_params):
    final, history = jax.jit(_loop)(_key(13), small_params, 0.0)
    assert isinstance(final.params, FlowParams)
    assert history["reward_mean"].shape == (3,)
    for name, value in history.items():
        assert np.all(np.isfinite(np.asarray(value, np.float64))), name
    assert np.all(np.asarray(history["fit_is_finite"]))
    assert int(final.params.opt_state.count) == 100 + 2 * 50  # warm-started twice


def test_sweep(small_params):
    def fn(key, real_fraction):
        return _loop(key, small_params, real_fraction)[1]

    result = sc.sweep(_key(14), fn, num_seeds=2, grid={"real_fraction": [0.0, 0.5]})
    assert result.values["reward_mean"].shape == (2, 2, 3)
    for name, value in result.values.items():
        assert np.all(np.isfinite(np.asarray(value, np.float64))), name
    assert np.all(np.asarray(result.values["fit_is_finite"]))


def test_registry():
    assert models.MODELS["flow_matching"] is flow_matching
    assert models.get("flow_matching", dim=2).name == "flow_matching"


# ------------------------------------------------------------------------------------------------
# Argument errors (raised at trace time, before any computation)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=0), "`dim`"),
    (dict(dim=2.0), "`dim`"),
    (dict(dim=2, width=0), "`width`"),
    (dict(dim=2, depth=0), "`depth`"),
    (dict(dim=2, time_frequencies=0), "`time_frequencies`"),
    (dict(dim=2, batch_size=True), "`batch_size`"),
    (dict(dim=2, steps=0), "`steps`"),
    (dict(dim=2, init_steps=-1), "`init_steps`"),
    (dict(dim=2, num_sample_steps=0), "`num_sample_steps`"),
    (dict(dim=2, log_prob_max_dim=-1), "`log_prob_max_dim`"),
    (dict(dim=2, activation="silu"), "`activation`"),
    (dict(dim=2, learning_rate=0.0), "`learning_rate`"),
    (dict(dim=2, learning_rate=-1e-3), "`learning_rate`"),
    (dict(dim=2, learning_rate=float("nan")), "`learning_rate`"),
    (dict(dim=2, learning_rate=jnp.float32(1e-3)), "`learning_rate`"),
])
def test_factory_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_matching(**kwargs)


def test_call_errors(small_params):
    p = small_params
    x = SMALL_RING
    with pytest.raises(ValueError, match="`data`"):
        SMALL.init(_key(), x[:, :1])
    with pytest.raises(ValueError, match="`data`"):
        SMALL.init(_key(), np.full((4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="`weights`"):
        SMALL.init(_key(), x, jnp.ones(3))
    with pytest.raises(ValueError, match="`weights`"):
        SMALL.fit(_key(), p, x, -np.ones(x.shape[0]))
    with pytest.raises(ValueError, match="`weights`"):
        SMALL.fit(_key(), p, x, np.zeros(x.shape[0]))
    with pytest.raises(ValueError, match="`learning_rate`"):
        SMALL.init(_key(), x, learning_rate=0.0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        SMALL.init(_key(), x, learning_rate=np.ones(2))
    with pytest.raises(ValueError, match="`learning_rate`"):
        with_learning_rate(p, -1.0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        with_learning_rate(p, np.inf)
    with pytest.raises(ValueError, match="`params`"):
        BIG.fit(_key(), p, x)  # made by the small model: a different network
    with pytest.raises(ValueError, match="`params`"):
        SMALL.sample(_key(), {"network": p.network}, 10)
    with pytest.raises(ValueError, match="`params.mean`"):
        SMALL.sample(_key(), p.replace(mean=jnp.zeros(3)), 10)
    with pytest.raises(ValueError, match="`num_samples`"):
        SMALL.sample(_key(), p, 0)
    with pytest.raises(ValueError, match="`num_samples`"):
        SMALL.sample(_key(), p, 2.0)
    with pytest.raises(ValueError, match="`x`"):
        SMALL.log_prob(p, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="`t`"):
        velocity(p, x, jnp.zeros(3))
    with pytest.raises(ValueError, match="`x`"):
        divergence(p, jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match="`num_points`"):
        flow_matching_loss(_key(), p, x, num_points=0)
