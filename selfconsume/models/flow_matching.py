r"""Conditional flow matching with a straight-line path, an MLP velocity field and Adam.

**Coordinates.** The network works in standardised coordinates :math:`z = (x - m) / s`, with the
weighted mean :math:`m` and per-coordinate standard deviation :math:`s_i = (\sigma_i^2 + 100\,
\epsilon\, \bar\sigma^2 + 10^{-6})^{1/2}` of the data given to ``init`` (:math:`\sigma_i^2` the
weighted variances, :math:`\bar\sigma^2` their mean, :math:`\epsilon` the machine epsilon: the floor
keeps degenerate data finite); ``fit`` keeps :math:`m, s`, so that a warm start continues the same
function. Samples are mapped back by :math:`x = m + s \odot z`.

**Path and loss.** With a source point :math:`z_0 \sim \mathcal N(0, I)`, a data point
:math:`z_1` drawn with probability :math:`\tilde w_n` (the normalised weights) and :math:`t \sim
U[0, 1]`, the straight line :math:`z_t = (1 - t) z_0 + t z_1` moves at the constant velocity
:math:`z_1 - z_0`, and the velocity field :math:`v_\theta(z, t)` minimises

.. math::
    \mathcal L(\theta) = \mathbb E_{t, z_0, z_1}
    \big\lVert v_\theta(z_t, t) - (z_1 - z_0) \big\rVert^2,

whose minimiser :math:`v^*(z, t) = \mathbb E[z_1 - z_0 \mid z_t = z]` transports
:math:`\mathcal N(0, I)` at :math:`t = 0` to the weighted data law at :math:`t = 1` (Lipman et al.
2023; Liu et al. 2023). Each training step estimates :math:`\mathcal L` on a minibatch of
``batch_size`` triples; the minibatch indices are inverse-CDF draws (cumulative sum and binary
search, :math:`O(N + S B \log N)` for all :math:`S` steps at once, held as an ``(S, B)`` int32
array), and the parameters take one Adam step (``optax.inject_hyperparams(optax.adam)``, so the
learning rate is an array leaf of the optimiser state). ``init`` trains from a fresh network for
``init_steps`` steps; ``fit`` runs ``steps`` more from the given network and optimiser state.

**Network.** :math:`v_\theta(z, t) = \mathrm{MLP}([z, \phi(t)])` with ``depth`` hidden layers of
``width`` units and the activation (SiLU by default), and the time features
:math:`\phi(t) = (\sin \omega_k t, \cos \omega_k t)_{k=1..F}` at :math:`F` = ``time_frequencies``
angular frequencies :math:`\omega_k` spaced geometrically in :math:`[1, 8]`.

**Sampling.** Heun's method (explicit trapezoid, second order) for :math:`dz/dt = v_\theta(z, t)`
from :math:`z_0 \sim \mathcal N(0, I)` at :math:`t = 0` to :math:`t = 1` in :math:`M` =
``num_sample_steps`` steps of :math:`h = 1/M`:

.. math::
    k_1 = v_\theta(z, t),\quad k_2 = v_\theta(z + h k_1, t + h),\quad
    z \leftarrow z + \tfrac h2 (k_1 + k_2).

**Density.** By the instantaneous change of variables, :math:`\frac{d}{dt} \log p_t(z_t) =
-\operatorname{tr} \frac{\partial v_\theta}{\partial z}(z_t, t)`, so for a point :math:`x` with
:math:`z_1 = (x - m)/s`,

.. math::
    \log p(x) = \log \mathcal N(z_0; 0, I)
      - \int_0^1 \operatorname{tr} \frac{\partial v_\theta}{\partial z}(z_t, t)\, dt
      - \textstyle\sum_i \log s_i,

where :math:`(z_t, \int_t^1 \operatorname{tr})` solve the augmented ODE backwards from
:math:`t = 1` to :math:`t = 0` with the same Heun steps. The trace is exact (the Jacobian by
``jax.jacfwd`` per point, ``dim`` forward-mode passes), so ``log_prob`` is offered for ``dim <=
log_prob_max_dim`` only; above it the model's ``log_prob`` is ``None``. It is the density of the
continuous flow of :math:`v_\theta`, up to the :math:`O(h^2)` error of the solver (the samples
come from the discrete Heun map, which approximates the same flow).

**Validation.** Under ``jit``, non-finite data, invalid weights (negative, non-finite, all zero) or
a learning rate that is not finite and positive make ``init``, ``fit`` and
:func:`with_learning_rate` return params whose floating leaves are all NaN
(:func:`selfconsume._checks.poison`).
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax

from selfconsume import _checks
from selfconsume.models._common import (
    HIGHEST,
    GenerativeModel,
    both,
    check_num_samples,
    check_param_shape,
    check_points,
    check_weights,
    fit_inputs,
    inverse_cdf,
    options_key,
    points_ok,
)
from selfconsume.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = ["FlowParams", "VelocityMLP", "flow_matching", "with_learning_rate", "velocity",
           "divergence", "flow_matching_loss"]

_MIN_VARIANCE = 1e-6  # absolute part of the variance floor of the standardisation
_MAX_FREQUENCY = 8.0  # largest angular frequency of the time features


class VelocityMLP(nn.Module):
    """The velocity field :math:`v_\\theta(z, t)`: an MLP on ``[z, sin(w t), cos(w t)]``.

    Attributes:
        dim: output (and input) dimension ``d``.
        width: hidden units per layer.
        depth: number of hidden layers.
        time_frequencies: number ``F`` of angular frequencies of the time features.
        activation: the hidden activation.
        param_dtype: dtype of the parameters created by ``init``.
    """

    dim: int
    width: int
    depth: int
    time_frequencies: int
    activation: Callable[[Array], Array] = jax.nn.silu
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z: Array, t: Array) -> Array:
        """Velocity at ``z`` ``(n, d)`` and times ``t`` ``(n,)``; returns ``(n, d)``."""
        omega = jnp.asarray(np.geomspace(1.0, _MAX_FREQUENCY, self.time_frequencies), z.dtype)
        angle = t.astype(z.dtype)[:, None] * omega[None, :]  # (n, F)
        h = jnp.concatenate([z, jnp.sin(angle), jnp.cos(angle)], axis=1)
        for _ in range(self.depth):
            h = self.activation(nn.Dense(self.width, param_dtype=self.param_dtype)(h))
        return nn.Dense(self.dim, param_dtype=self.param_dtype)(h)


@struct.dataclass
class FlowParams:
    """Params of :func:`flow_matching`.

    Attributes:
        network: the flax params pytree of the velocity MLP (``{"params": {"Dense_0": ...}}``).
        opt_state: the state of ``optax.inject_hyperparams(optax.adam)``: Adam's step count and
            moments, and ``hyperparams["learning_rate"]``, a scalar array (see
            :func:`with_learning_rate` and :attr:`learning_rate`).
        mean: ``(d,)`` weighted mean :math:`m` of the ``init`` data.
        std: ``(d,)`` weighted standard deviation :math:`s` of the ``init`` data (floored).
        loss: scalar, the mean minibatch loss of the last ``init`` or ``fit`` (a diagnostic; with
            ``init_steps = 0``, the loss of one minibatch at the fresh network).
        module: the :class:`VelocityMLP` (static metadata, not a leaf).
    """

    network: PyTree
    opt_state: PyTree
    mean: Array
    std: Array
    loss: Array
    module: VelocityMLP = struct.field(pytree_node=False)

    @property
    def learning_rate(self) -> Array:
        """The learning rate ``fit`` uses: a scalar array leaf of ``opt_state``."""
        return self.opt_state.hyperparams["learning_rate"]


def _check_learning_rate(learning_rate) -> None:
    if jnp.ndim(learning_rate) != 0:
        raise ValueError(
            f"`learning_rate` must be a scalar; got shape {jnp.shape(learning_rate)}.")
    if _checks.is_concrete(learning_rate):
        v = float(np.asarray(learning_rate))
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"`learning_rate` must be finite and > 0; got {v!r}.")


def with_learning_rate(params: FlowParams, learning_rate: ArrayLike) -> FlowParams:
    """Returns ``params`` whose optimiser state carries ``learning_rate`` (used by later fits).

    Args:
        params: :class:`FlowParams`.
        learning_rate: scalar ``> 0``, possibly traced (e.g. vmapped over a grid); cast to the
            dtype of the current learning-rate leaf so that the pytree's dtypes do not change.

    Returns:
        :class:`FlowParams`; all floating leaves NaN if a traced ``learning_rate`` is not finite
        and ``> 0``.

    Raises:
        ValueError: if ``learning_rate`` is not a scalar, or is concrete and not finite and > 0.
    """
    _check_learning_rate(learning_rate)
    state = params.opt_state
    old = state.hyperparams["learning_rate"]
    lr = jnp.asarray(learning_rate, old.dtype)
    hyper = dict(state.hyperparams, learning_rate=lr)
    out = params.replace(opt_state=state._replace(hyperparams=hyper))
    ok = True if _checks.is_concrete(learning_rate) else (lr > 0) & jnp.isfinite(lr)
    return _checks.poison(ok, out)


def _check_points_and_times(params: FlowParams, x, t) -> tuple[Array, Array]:
    x = check_points("x", x, params.mean.shape[0], finite=False).astype(params.mean.dtype)
    t = jnp.asarray(t)
    if t.shape != x.shape[:1]:
        raise ValueError(f"`t` must have shape (n,) = ({x.shape[0]},), one time per point; got "
                         f"shape {t.shape}.")
    return x, t.astype(params.mean.dtype)


def velocity(params: FlowParams, x: ArrayLike, t: ArrayLike) -> Array:
    """The learned velocity :math:`dx/dt = s \\odot v_\\theta((x - m)/s, t)` in data coordinates.

    Args:
        params: :class:`FlowParams`.
        x: ``(n, d)`` points.
        t: ``(n,)`` times in ``[0, 1]``.

    Returns:
        ``(n, d)`` velocities.

    Raises:
        ValueError: if ``x`` is not ``(n, d)`` or ``t`` is not ``(n,)``.
    """
    x, t = _check_points_and_times(params, x, t)
    z = (x - params.mean[None, :]) / params.std[None, :]
    return params.std[None, :] * params.module.apply(params.network, z, t)


def _velocity_and_trace(module: VelocityMLP, network: PyTree, z: Array,
                        t: Array) -> tuple[Array, Array]:
    """``v(z, t)`` ``(n, d)`` and the exact ``tr dv/dz`` ``(n,)``: ``jax.jacfwd`` per point."""

    def one(zi, ti):
        def f(u):
            v = module.apply(network, u[None, :], ti[None])[0]
            return v, v

        jac, v = jax.jacfwd(f, has_aux=True)(zi)
        return v, jnp.trace(jac)

    return jax.vmap(one)(z, t)


def divergence(params: FlowParams, x: ArrayLike, t: ArrayLike) -> Array:
    """Exact divergence :math:`\\nabla_x \\cdot (dx/dt)` of :func:`velocity`, ``(n,)``.

    Equal to :math:`\\operatorname{tr} \\partial v_\\theta / \\partial z` at :math:`z = (x - m)/s`
    (the standardisation cancels), computed with ``jax.jacfwd`` per point.
    """
    x, t = _check_points_and_times(params, x, t)
    z = (x - params.mean[None, :]) / params.std[None, :]
    return _velocity_and_trace(params.module, params.network, z, t)[1]


def _architecture(module: VelocityMLP) -> tuple:
    """What a network's params must match (the param dtype may differ)."""
    return (module.dim, module.width, module.depth, module.time_frequencies, module.activation)


def _minibatch_loss(module: VelocityMLP, network: PyTree, z0: Array, z1: Array,
                    t: Array) -> Array:
    """Mean over the batch of ``||v(z_t, t) - (z1 - z0)||^2``."""
    zt = (1.0 - t)[:, None] * z0 + t[:, None] * z1
    residual = module.apply(network, zt, t) - (z1 - z0)
    return jnp.mean(jnp.sum(residual * residual, axis=1))


def _draw_triples(key: PRNGKey, z1: Array) -> tuple[Array, Array]:
    r"""Source points ``z0`` shaped like ``z1`` ``(..., d)`` and times ``t`` ``(...)``.

    One Gaussian draw of ``d + 1`` coordinates per point: the first ``d`` are :math:`z_0`, the
    last :math:`\epsilon` gives :math:`t = \Phi(\epsilon) \sim U(0, 1)` (one random-bits call
    per training step instead of two: each threefry call site adds to the compile time).
    """
    d = z1.shape[-1]
    eps = jax.random.normal(key, z1.shape[:-1] + (d + 1,), z1.dtype)
    return eps[..., :d], jax.scipy.special.ndtr(eps[..., d])


def flow_matching_loss(key: PRNGKey, params: FlowParams, data: ArrayLike,
                       weights: ArrayLike | None = None, *, num_points: int = 4096) -> Array:
    """Monte Carlo estimate of the flow-matching loss :math:`\\mathcal L(\\theta)` on ``data``.

    The same ``key`` draws the same data indices, source points and times, so two params can be
    compared on common random numbers.

    Args:
        key: PRNG key, consumed.
        params: :class:`FlowParams`.
        data: ``(N, d)`` points in data coordinates (standardised with ``params.mean`` and
            ``params.std`` before use).
        weights: optional ``(N,)`` non-negative weights, not all zero.
        num_points: static number of (data, source, time) triples.

    Returns:
        Scalar loss (in standardised coordinates, as minimised by ``fit``); NaN for traced
        non-finite data or invalid weights.
    """
    n = _checks.static_int("num_points", num_points, minimum=1)
    d = params.mean.shape[0]
    x = check_points("data", data, d).astype(params.mean.dtype)
    w, ok = check_weights(weights, x.shape[0], x.dtype)
    key_index, key_rest = jax.random.split(key)
    z1 = ((x - params.mean[None, :]) / params.std[None, :])[inverse_cdf(key_index, w, (n,))]
    z0, t = _draw_triples(key_rest, z1)
    loss = _minibatch_loss(params.module, params.network, z0, z1, t)
    return _checks.poison(both(ok, points_ok(x)), loss)


def flow_matching(dim: int, *, width: int = 128, depth: int = 3, time_frequencies: int = 8,
                  activation: Callable[[Array], Array] = jax.nn.silu, batch_size: int = 256,
                  steps: int = 200, init_steps: int = 2000, learning_rate: float = 2e-3,
                  num_sample_steps: int = 32, log_prob_max_dim: int = 8) -> GenerativeModel:
    """The conditional flow-matching family in ``dim`` dimensions (see the module docstring).

    Args:
        dim: static dimension ``d >= 1``.
        width: static hidden units per layer, ``>= 1``.
        depth: static number of hidden layers, ``>= 1``.
        time_frequencies: static number of angular frequencies of the time features, ``>= 1``.
        activation: hidden activation (a static callable, e.g. ``jax.nn.silu``, ``jax.nn.gelu``).
        batch_size: static minibatch size ``B >= 1``.
        steps: static number of Adam steps run by ``fit`` (warm-started), ``>= 1``.
        init_steps: static number of Adam steps run by ``init`` from a fresh network, ``>= 0``.
        learning_rate: default Adam learning rate set by ``init`` (finite, ``> 0``).
        num_sample_steps: static number of Heun steps of ``sample`` and ``log_prob``, ``>= 1``.
        log_prob_max_dim: ``log_prob`` is provided for ``dim <= log_prob_max_dim`` (its exact
            trace costs ``dim`` forward passes per solver stage); otherwise it is ``None``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"flow_matching"`` with params
        :class:`FlowParams`:

        * ``init(key, data, weights=None, *, learning_rate=None)``: standardise, initialise the
          network and Adam (``learning_rate`` defaults to the factory's; it may be traced), and
          train ``init_steps`` steps.
        * ``fit(key, params, data, weights=None)``: ``steps`` Adam steps warm-started from
          ``params.network`` and ``params.opt_state``, at ``params.learning_rate``.
        * ``sample(key, params, num_samples)``: ``(num_samples, dim)`` points.
        * ``log_prob(params, x)``: ``(n,)`` log-densities, or ``None`` for ``dim >
          log_prob_max_dim``.

    Raises:
        ValueError: if a static size is not an integer in its range, ``activation`` is not
            callable, or ``learning_rate`` is not a finite Python float ``> 0``.
    """
    d = _checks.static_int("dim", dim, minimum=1)
    width = _checks.static_int("width", width, minimum=1)
    depth = _checks.static_int("depth", depth, minimum=1)
    num_freq = _checks.static_int("time_frequencies", time_frequencies, minimum=1)
    batch = _checks.static_int("batch_size", batch_size, minimum=1)
    fit_steps = _checks.static_int("steps", steps, minimum=1)
    init_steps = _checks.static_int("init_steps", init_steps, minimum=0)
    ode_steps = _checks.static_int("num_sample_steps", num_sample_steps, minimum=1)
    max_dim = _checks.static_int("log_prob_max_dim", log_prob_max_dim, minimum=0)
    if not callable(activation):
        raise ValueError(f"`activation` must be a callable such as jax.nn.silu; got "
                         f"{activation!r}.")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not (
            learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(
            f"`learning_rate` must be a finite Python float > 0; got {learning_rate!r}.")
    default_lr = float(learning_rate)

    module = VelocityMLP(dim=d, width=width, depth=depth, time_frequencies=num_freq,
                         activation=activation)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=default_lr)

    def _check_params(params: FlowParams):
        if not isinstance(params, FlowParams):
            raise ValueError(f"`params` must be FlowParams; got {type(params).__name__}.")
        if _architecture(params.module) != _architecture(module):
            raise ValueError(f"`params` were made by a different flow_matching model: network "
                             f"{params.module} instead of {module}.")
        check_param_shape("mean", params.mean, (d,))
        check_param_shape("std", params.std, (d,))

    def _train(key, params: FlowParams, z, w, num_steps: int) -> FlowParams:
        """``num_steps`` Adam steps on standardised data ``z`` ``(N, d)`` with weights ``w``."""
        keys = jax.random.split(key, max(num_steps, 1) + 1)
        # All the minibatch indices at once: one cumulative sum, S * B binary searches.
        index = inverse_cdf(keys[0], w, (max(num_steps, 1), batch))
        if num_steps == 0:  # report the loss of one minibatch at the given network
            z1 = z[index[0]]
            z0, t = _draw_triples(keys[1], z1)
            return params.replace(
                loss=_minibatch_loss(params.module, params.network, z0, z1, t))
        grad_fn = jax.value_and_grad(lambda net, *a: _minibatch_loss(params.module, net, *a))

        def step(carry, xs):
            network, opt_state = carry
            k, idx = xs
            z1 = z[idx]
            z0, t = _draw_triples(k, z1)
            loss, grads = grad_fn(network, z0, z1, t)
            updates, opt_state = optimizer.update(grads, opt_state, network)
            return (optax.apply_updates(network, updates), opt_state), loss

        (network, opt_state), losses = lax.scan(
            step, (params.network, params.opt_state), (keys[1:], index))
        return params.replace(network=network, opt_state=opt_state, loss=jnp.mean(losses))

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None, *,
             learning_rate: ArrayLike | None = None) -> FlowParams:
        """Standardises ``data`` ``(N, dim)``, initialises the network and Adam (at
        ``learning_rate``, default the factory's), then trains ``init_steps`` steps."""
        if learning_rate is not None:
            _check_learning_rate(learning_rate)
        x, w, ok = fit_inputs(data, weights, d)
        mean = jnp.matmul(w, x, precision=HIGHEST)
        var = jnp.matmul(w, jnp.square(x - mean[None, :]), precision=HIGHEST)
        std = jnp.sqrt(var + 100 * jnp.finfo(x.dtype).eps * jnp.mean(var) + _MIN_VARIANCE)
        key_net, key_train = jax.random.split(key)
        net_module = module.clone(param_dtype=jnp.dtype(x.dtype))
        network = net_module.init(key_net, jnp.zeros((1, d), x.dtype), jnp.zeros((1,), x.dtype))
        params = FlowParams(network=network, opt_state=optimizer.init(network), mean=mean,
                            std=std, loss=jnp.zeros((), x.dtype), module=net_module)
        if learning_rate is not None:
            params = with_learning_rate(params, learning_rate)
        z = (x - mean[None, :]) / std[None, :]
        return _checks.poison(ok, _train(key_train, params, z, w, init_steps))

    def fit(key: PRNGKey, params: FlowParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> FlowParams:
        """``steps`` minibatch Adam steps on ``data`` ``(N, dim)`` warm-started at ``params``
        (network, Adam moments and learning rate); the standardisation is kept."""
        _check_params(params)
        x = check_points("data", data, d).astype(params.mean.dtype)
        w, ok = check_weights(weights, x.shape[0], x.dtype)
        ok = both(ok, points_ok(x))
        z = (x - params.mean[None, :]) / params.std[None, :]
        return _checks.poison(ok, _train(key, params, z, w, fit_steps))

    def _heun(f, state, t0: float, t1: float, dtype):
        """``ode_steps`` Heun steps of ``d state/dt = f(state, t)`` from ``t0`` to ``t1``."""
        h = (t1 - t0) / ode_steps

        def step(s, i):
            t = t0 + h * i.astype(dtype)
            k1 = f(s, t)
            k2 = f(jax.tree.map(lambda a, b: a + h * b, s, k1), t + h)
            return jax.tree.map(lambda a, b, c: a + 0.5 * h * (b + c), s, k1, k2), None

        state, _ = lax.scan(step, state, jnp.arange(ode_steps))
        return state

    def sample(key: PRNGKey, params: FlowParams, num_samples: int) -> Array:
        """Draws ``(num_samples, dim)`` points: Gaussian noise pushed from ``t = 0`` to ``t = 1``
        by ``num_sample_steps`` Heun steps, then mapped back to data coordinates."""
        n = check_num_samples(num_samples)
        _check_params(params)
        z0 = jax.random.normal(key, (n, d), params.mean.dtype)

        def f(z, t):
            return params.module.apply(params.network, z, jnp.full((n,), t, z.dtype))

        z1 = _heun(f, z0, 0.0, 1.0, z0.dtype)
        return params.mean[None, :] + params.std[None, :] * z1

    def log_prob(params: FlowParams, x: ArrayLike) -> Array:
        """Log-density at ``x`` ``(n, dim)`` by the augmented ODE integrated from ``t = 1`` back
        to ``t = 0`` with the exact trace; returns ``(n,)``."""
        _check_params(params)
        x = check_points("x", x, d, finite=False).astype(params.mean.dtype)
        n = x.shape[0]
        z1 = (x - params.mean[None, :]) / params.std[None, :]

        def f(state, t):
            z, _ = state
            return _velocity_and_trace(params.module, params.network, z,
                                       jnp.full((n,), t, z.dtype))

        # d ell/dt = tr dv/dz with ell(1) = 0, integrated backwards: ell(0) = -int_0^1 tr dt.
        z0, ell = _heun(f, (z1, jnp.zeros((n,), z1.dtype)), 1.0, 0.0, z1.dtype)
        log_base = -0.5 * jnp.sum(z0 * z0, axis=1) - 0.5 * d * math.log(2 * math.pi)
        return log_base + ell - jnp.sum(jnp.log(params.std))

    options = options_key(dim=d, width=width, depth=depth, time_frequencies=num_freq,
                          activation=activation, batch_size=batch, steps=fit_steps,
                          init_steps=init_steps, learning_rate=default_lr,
                          num_sample_steps=ode_steps, log_prob_max_dim=max_dim)
    return GenerativeModel(name="flow_matching", init=init, fit=fit, sample=sample,
                           log_prob=log_prob if d <= max_dim else None, options=options)
