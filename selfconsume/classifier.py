r"""A small MLP classifier whose class probabilities define image rewards.

Inputs are flattened to :math:`d` features and standardised with statistics of the training set,

.. math::
    z = (\operatorname{vec}(x) - \mu) / \sigma, \qquad
    \mu_j = \tfrac1N \textstyle\sum_n \operatorname{vec}(x_n)_j, \qquad
    \sigma^2 = \tfrac1{Nd} \textstyle\sum_{n,j} (\operatorname{vec}(x_n)_j - \mu_j)^2,

(one scalar :math:`\sigma`, so that a feature that is constant in the training data, such as the
border pixels of the digits, is not blown up on generated samples). The network is

.. math::
    h_0 = z, \quad h_l = \mathrm{relu}(W_l h_{l-1} + b_l)\ (l = 1..L), \quad
    f(x) = W_{L+1} h_L + b_{L+1}, \quad q(x) = \operatorname{softmax}(f(x)),

with widths ``hidden = (w_1, ..., w_L)``; :math:`q_i(x)` is the probability of class :math:`i`.
Kernels start LeCun-normal, :math:`N(0, 1/\mathrm{fan\_in})` (one PRNG draw for all layers),
biases at zero.

Training minimises the mean cross-entropy :math:`-\frac1B \sum_b \log q_{y_b}(x_b)` over
``steps`` minibatches of ``B = batch_size`` examples drawn uniformly with replacement, with AdamW
(decoupled weight decay :math:`\lambda` on the weight matrices only, not the biases) and a cosine
learning-rate decay :math:`\eta_t = \eta\,\tfrac12(1 + \cos(\pi t / T))`. The steps run as one
``lax.scan`` over per-step keys, so :func:`train` is jittable and vmaps over seeds (and over
``learning_rate`` and ``weight_decay``, which may be traced).

Everything is pure: a :class:`Classifier` is a frozen ``flax.struct.dataclass`` whose params and
standardisation statistics are pytree leaves and whose sizes are static fields; its methods are
jittable and vmappable, e.g. ``jax.jit(lambda c, x: c.probabilities(x))``.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike, PRNGKey, PyTree

__all__ = ["Classifier", "MLP", "init", "train"]


class MLP(nn.Module):
    """The network :math:`f`: ReLU hidden layers of widths ``hidden``, then a linear output layer.

    Attributes:
        hidden: widths of the hidden layers (may be empty: a linear classifier).
        num_classes: number of outputs.
    """

    hidden: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, z: Array) -> Array:
        """Maps standardised features ``(n, d)`` to logits ``(n, num_classes)``."""
        for i, width in enumerate(self.hidden):
            z = nn.relu(nn.Dense(width, name=f"hidden_{i}")(z))
        return nn.Dense(self.num_classes, name="output")(z)


@struct.dataclass
class Classifier:
    """A trained (or hand-built) classifier: params and standardisation as pytree leaves.

    Attributes:
        params: the :class:`MLP` params (a plain dict pytree: ``{"hidden_0": {"kernel", "bias"},
            ..., "output": {...}}``, kernels of shape ``(fan_in, fan_out)``).
        shift: ``(d,)`` the per-feature mean :math:`\\mu` subtracted from the flattened inputs.
        scale: ``()`` the scalar :math:`\\sigma` the centred inputs are divided by.
        input_shape: static; the shape of one input (``(64,)`` for the digits, ``(32, 32, 3)`` for
            CIFAR-10); ``d = prod(input_shape)``.
        num_classes: static; the number of classes.
        hidden: static; the hidden widths of the :class:`MLP`.
    """

    params: PyTree
    shift: Array
    scale: Array
    input_shape: tuple[int, ...] = struct.field(pytree_node=False)
    num_classes: int = struct.field(pytree_node=False)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=())

    @property
    def num_features(self) -> int:
        """``d``: the number of features of one flattened input."""
        return math.prod(self.input_shape)

    def _flatten(self, x: ArrayLike) -> tuple[Array, tuple[int, ...]]:
        """Returns ``(z, batch_shape)``: standardised features ``(prod(batch_shape), d)``."""
        x = jnp.asarray(x)
        k, d = len(self.input_shape), self.num_features
        if x.ndim >= k and tuple(x.shape[x.ndim - k:]) == tuple(self.input_shape):
            batch = tuple(x.shape[:x.ndim - k])
        elif x.ndim >= 1 and x.shape[-1] == d:
            batch = tuple(x.shape[:-1])
        else:
            raise ValueError(
                f"`x` must have shape (..., {', '.join(map(str, self.input_shape))}) or (..., {d}) "
                f"(the classifier's input shape, or its {d} features flattened); got shape "
                f"{x.shape}.")
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise ValueError(f"`x` must hold real numbers; got dtype {x.dtype}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        z = x.reshape((math.prod(batch), d))
        return (z - self.shift[None, :]) / self.scale, batch

    def logits(self, x: ArrayLike) -> Array:
        """The logits :math:`f(x)`.

        Args:
            x: ``(*batch, *input_shape)`` or ``(*batch, d)`` inputs; ``batch`` may be empty (one
                example) or have several axes.

        Returns:
            ``(*batch, num_classes)`` logits.
        """
        z, batch = self._flatten(x)
        out = MLP(tuple(self.hidden), self.num_classes).apply({"params": self.params}, z)
        return out.reshape(batch + (self.num_classes,))

    def log_probabilities(self, x: ArrayLike) -> Array:
        """``(*batch, num_classes)`` log-probabilities :math:`\\log q_i(x)` (``log_softmax``)."""
        return jax.nn.log_softmax(self.logits(x), axis=-1)

    def probabilities(self, x: ArrayLike) -> Array:
        """``(*batch, num_classes)`` class probabilities :math:`q_i(x)` (each row sums to one)."""
        return jax.nn.softmax(self.logits(x), axis=-1)

    def predict(self, x: ArrayLike) -> Array:
        """``(*batch,)`` int32 predicted classes :math:`\\arg\\max_i q_i(x)`."""
        return jnp.argmax(self.logits(x), axis=-1).astype(jnp.int32)

    def accuracy(self, x: ArrayLike, labels: ArrayLike) -> Array:
        """The fraction of inputs whose predicted class equals the label.

        Args:
            x: ``(*batch, *input_shape)`` or ``(*batch, d)`` inputs.
            labels: ``(*batch,)`` integer labels.

        Returns:
            A scalar in ``[0, 1]``.
        """
        pred = self.predict(x)
        labels = jnp.asarray(labels)
        if labels.shape != pred.shape:
            raise ValueError(f"`labels` must have shape {pred.shape}, one label per input in `x`; "
                             f"got shape {labels.shape}.")
        return jnp.mean((pred == labels).astype(jnp.result_type(float)))


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden, (int, np.integer)) or not isinstance(hidden, Sequence):
        raise ValueError(f"`hidden` must be a sequence of layer widths (integers >= 1), e.g. "
                         f"(256, 128); got {hidden!r}.")
    for width in hidden:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
            raise ValueError(f"`hidden` must hold integers >= 1; got {tuple(hidden)!r}.")
    return tuple(int(w) for w in hidden)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        shape = None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"`input_shape` must be a non-empty tuple of sizes >= 1, the shape of one "
                         f"input; got {input_shape!r}.")
    return shape


def init(key: PRNGKey, input_shape: Sequence[int], *, num_classes: int,
         hidden: Sequence[int] = (256, 128)) -> Classifier:
    r"""An untrained classifier: LeCun-normal kernels, zero biases, ``shift = 0``, ``scale = 1``.

    The kernels are :math:`W_l \sim \mathcal N(0, 1/\mathrm{fan\_in})` entrywise (untruncated),
    drawn in one PRNG call for all layers; the param tree is the one ``MLP.init`` builds.

    Args:
        key: PRNG key, consumed.
        input_shape: static shape of one input, e.g. ``(64,)`` or ``(32, 32, 3)``.
        num_classes: static number of classes, >= 2.
        hidden: static hidden widths (may be empty).

    Returns:
        A :class:`Classifier`.
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = _checks.static_int("num_classes", num_classes, minimum=2)
    hidden = _check_hidden(hidden)
    d = math.prod(input_shape)
    dtype = jnp.result_type(float)
    module = MLP(hidden, num_classes)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, d), dtype))
    leaves, treedef = jax.tree.flatten(shapes["params"])
    # One normal draw for every kernel (LeCun normal: N(0, 1/fan_in)), biases zero. One PRNG call
    # instead of Flax's one per layer (fold_in + truncated normal) compiles ~3 s faster on CPU.
    sizes = [math.prod(leaf.shape) if leaf.ndim == 2 else 0 for leaf in leaves]
    noise = jax.random.normal(key, (sum(sizes),), dtype)
    params, offset = [], 0
    for leaf, size in zip(leaves, sizes):
        if leaf.ndim == 2:
            w = noise[offset:offset + size].reshape(leaf.shape) / math.sqrt(leaf.shape[0])
            params.append(w.astype(leaf.dtype))
            offset += size
        else:
            params.append(jnp.zeros(leaf.shape, leaf.dtype))
    return Classifier(params=jax.tree.unflatten(treedef, params), shift=jnp.zeros((d,), dtype),
                      scale=jnp.ones((), dtype), input_shape=input_shape,
                      num_classes=num_classes, hidden=hidden)


def _check_rate(name: str, value, *, positive: bool):
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(value)}.")
    if _checks.is_concrete(value):
        v = float(np.asarray(value))
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ValueError(f"`{name}` must be a finite number {'> 0' if positive else '>= 0'}; "
                             f"got {v!r}.")
    return value


def train(key: PRNGKey, x: ArrayLike, labels: ArrayLike, *, num_classes: int,
          hidden: Sequence[int] = (256, 128), steps: int = 2000, batch_size: int = 128,
          learning_rate: ArrayLike = 1e-3, weight_decay: ArrayLike = 1e-4) -> Classifier:
    """Trains an MLP classifier by minibatch AdamW on the cross-entropy (see the module docstring).

    Jittable and vmappable over ``key`` (and ``learning_rate``, ``weight_decay``): e.g.
    ``jax.vmap(lambda k: train(k, x, y, num_classes=10))(keys)`` trains one classifier per key
    in one compiled program. On the 8x8 digits (80/20 split) the defaults reach 98-99%
    held-out accuracy in about 6 s on a 2-core CPU (4 s of it compilation).

    Args:
        key: PRNG key, consumed (initialisation and minibatches).
        x: ``(N, *input_shape)`` training inputs (any real dtype; images in ``[0, 1]``), N >= 1.
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: static number of classes, >= 2.
        hidden: static hidden widths.
        steps: static number of optimisation steps (minibatches).
        batch_size: static minibatch size (drawn with replacement; may exceed N).
        learning_rate: peak AdamW learning rate, > 0 (may be traced); decays to 0 on a cosine.
        weight_decay: decoupled weight decay of the weight matrices, >= 0 (may be traced).

    Returns:
        The trained :class:`Classifier`, with ``input_shape = x.shape[1:]``.

    Raises:
        ValueError: on bad shapes or static arguments; when ``x``/``labels`` are concrete, also on
            non-finite inputs or labels outside ``[0, num_classes)``.
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"`x` must have shape (N, *input_shape) with N >= 1; got shape {x.shape}.")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise ValueError(f"`x` must hold real numbers; got dtype {x.dtype}.")
    if labels.shape != (x.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integers of shape (N,) = ({x.shape[0]},); got shape "
                         f"{labels.shape} and dtype {labels.dtype}.")
    num_classes = _checks.static_int("num_classes", num_classes, minimum=2)
    steps = _checks.static_int("steps", steps, minimum=1)
    batch_size = _checks.static_int("batch_size", batch_size, minimum=1)
    _check_rate("learning_rate", learning_rate, positive=True)
    _check_rate("weight_decay", weight_decay, positive=False)
    if _checks.is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"`x` must be finite; got {int(np.sum(~np.isfinite(np.asarray(x))))} "
                         f"non-finite entries.")
    if _checks.is_concrete(labels):
        lab = np.asarray(labels)
        if lab.min() < 0 or lab.max() >= num_classes:
            raise ValueError(f"`labels` must lie in [0, num_classes) = [0, {num_classes}); got "
                             f"values in [{lab.min()}, {lab.max()}].")

    key_init, key_steps = jax.random.split(key)
    clf = init(key_init, x.shape[1:], num_classes=num_classes, hidden=hidden)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    n, d = x.shape[0], clf.num_features
    flat = x.reshape(n, d)
    shift = jnp.mean(flat, axis=0)
    scale = jnp.sqrt(jnp.mean((flat - shift[None, :]) ** 2))
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))  # constant data: plain centring
    clf = clf.replace(shift=shift, scale=scale)
    model = MLP(clf.hidden, num_classes)

    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    optimizer = optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)

    def loss_fn(params, zb, yb):
        logits = model.apply({"params": params}, zb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def step(carry, key_t):
        params, opt_state = carry
        idx = jax.random.randint(key_t, (batch_size,), 0, n)
        zb = (flat[idx] - shift[None, :]) / scale  # standardise the minibatch only (memory)
        grads = jax.grad(loss_fn)(params, zb, labels[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    carry = (clf.params, optimizer.init(clf.params))
    (params, _), _ = jax.lax.scan(step, carry, jax.random.split(key_steps, steps))
    return clf.replace(params=params)
