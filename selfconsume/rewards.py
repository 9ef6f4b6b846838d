r"""Reward functions: pure maps from samples ``(n, ...)`` to rewards ``(n,)``.

* ``distance(center, scale, radius)``: :math:`r(x) = -s \max(0, \|x - c\| - \rho)`, the clipped
  distance reward of the paper's two-dimensional experiments (flat, maximal, inside the ball of
  radius :math:`\rho` around :math:`c`).
* ``linear(direction, scale)``: :math:`r(x) = s \langle d, x \rangle`.
* ``table(values, scale)``: :math:`r(x) = s\, v_x` for categorical states :math:`x \in
  \{0..M-1\}`.

Rewards from a classifier :math:`q(x) = \operatorname{softmax}(f(x))` over ``C`` classes (a
:class:`selfconsume.classifier.Classifier`) or from a generative model's density:

* ``class_probability(classifier, i, scale)``: :math:`r(x) = s\, q_i(x)`; the paper's CIFAR-10
  reward is ``class_probability(classifier, 0, scale=5.0)`` = :math:`5 q_{\rm airplane}(x)`.
* ``confidence(classifier, scale)``: :math:`r(x) = s \max_i q_i(x)`.
* ``log_density(model, params, scale)``: :math:`r(x) = s \log p_\theta(x)` for a
  :class:`selfconsume.models.GenerativeModel` with a tractable ``log_prob``.

**Linear in the scale.** Every reward is exactly :math:`r(x) = s \cdot b(x)`: the option
``scale`` :math:`s` (default 1, a scalar that may be traced) times a base reward :math:`b` that
does not depend on it, computed as the single product ``scale * base(x)``. So multiplying a
reward by an array leaf (the loop's swept ``reward_scale``) is the same as building it with that
scale, and ``scale = 1`` returns the base reward bit for bit.

**Rewards are values.** A factory returns a :class:`Reward`: a plain callable ``reward(x) ->
(n,)`` that compares and hashes equal to another built by the same factory with equal options
(arrays compared by dtype and values; a classifier, or the params of ``log_density``, by
identity; a traced option by identity), so it can be a static argument of ``jax.jit`` and two
separately built equal rewards share one compilation.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from selfconsume import _checks
from selfconsume.models._common import identity_key
from selfconsume.types import Array, ArrayLike, PyTree

__all__ = ["Reward", "distance", "linear", "table", "class_probability", "confidence",
           "log_density", "REWARDS"]

RewardFn = Callable[[Array], Array]


def _option_key(value) -> Any:
    """A hashable key of an option value: Python scalars as they are, concrete arrays as their
    dtype and nested tuples of Python numbers, hashable objects as they are, anything else (a
    tracer, a classifier, a params pytree) by identity."""
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return value
    if not _checks.is_concrete(value):  # a tracer: no value to compare
        return identity_key(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        try:
            a = np.asarray(value)
        except Exception:  # noqa: BLE001 - not convertible: compare by identity
            return identity_key(value)
        if a.dtype == object:
            return identity_key(value)

        def nest(v):
            return tuple(nest(e) for e in v) if isinstance(v, list) else v

        return ("array", str(a.dtype), a.shape, nest(a.tolist()))
    try:
        hash(value)
    except TypeError:
        return identity_key(value)
    return value


class Reward:
    """A reward function ``reward(x) -> (n,)`` that is a value: it compares and hashes by its
    factory's name and options.

    Attributes:
        name: the factory's name (a key of :data:`REWARDS`).
        options: sorted ``(name, key)`` pairs, where each key is hashable (module docstring).
    """

    __slots__ = ("name", "options", "_fn")

    def __init__(self, name: str, options: dict, fn: RewardFn):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options",
                           tuple(sorted((k, _option_key(v)) for k, v in options.items())))
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, name, value):
        raise AttributeError(f"a Reward is immutable; cannot set {name!r}.")

    def __copy__(self):
        return self  # immutable

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x: ArrayLike) -> Array:
        """The rewards ``(n,)`` of the samples ``x`` ``(n, ...)``."""
        return self._fn(x)

    def _key(self) -> tuple:
        return (type(self), self.name, self.options)

    def __eq__(self, other):
        if not isinstance(other, Reward):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.options)
        return f"Reward(name={self.name!r}, options=({args}))"


def _short(key) -> str:
    if isinstance(key, tuple) and key and key[0] == "array":
        return f"array(dtype={key[1]}, shape={key[2]})" if np.prod(key[2]) > 8 else repr(key[3])
    return repr(key)


def _vector(name: str, value: ArrayLike) -> Array:
    value = jnp.asarray(value, jnp.result_type(float))
    if value.ndim != 1 or value.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D vector; got shape {value.shape}.")
    return value


def _check_points(x: Array, dim: int) -> Array:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"the reward expects samples of shape (n, {dim}); got shape {x.shape}.")
    return x


def distance(center: ArrayLike, *, scale: ArrayLike = 1.0, radius: ArrayLike = 0.0) -> Reward:
    """The clipped distance reward ``scale * (-max(0, ||x - center|| - radius))``.

    Args:
        center: ``(d,)`` the rewarded point.
        scale: reward scale (a scalar; may be traced).
        radius: the radius of the flat top (a scalar ``>= 0``).

    Returns:
        ``reward(x: (n, d)) -> (n,)``, a :class:`Reward`.
    """
    center = _vector("center", center)
    _check_scale(scale)
    _checks.scalar("radius", radius, minimum=0.0)

    def reward(x: Array) -> Array:
        x = _check_points(jnp.asarray(x), center.shape[0])
        if center.shape[0] <= 8:  # coordinates unrolled: XLA:CPU reduces a short axis slowly
            dist = jnp.sqrt(sum((x[:, i] - center[i]) ** 2 for i in range(center.shape[0])))
        else:
            dist = jnp.sqrt(jnp.sum((x - center[None, :]) ** 2, axis=1))
        return scale * -jnp.maximum(dist - radius, 0.0)

    return Reward("distance", dict(center=center, scale=scale, radius=radius), reward)


def linear(direction: ArrayLike, *, scale: ArrayLike = 1.0) -> Reward:
    """The linear reward ``scale * <direction, x>``.

    Args:
        direction: ``(d,)`` the rewarded direction.
        scale: reward scale (a scalar; may be traced).

    Returns:
        ``reward(x: (n, d)) -> (n,)``, a :class:`Reward`.
    """
    direction = _vector("direction", direction)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        x = _check_points(jnp.asarray(x), direction.shape[0])
        return scale * jnp.matmul(x, direction, precision="highest")

    return Reward("linear", dict(direction=direction, scale=scale), reward)


def table(values: ArrayLike, *, scale: ArrayLike = 1.0) -> Reward:
    """Rewards of categorical states: ``reward(x: (n,) int) -> scale * values[x]``.

    Args:
        values: ``(M,)`` the reward of each state.
        scale: reward scale (a scalar; may be traced).

    Returns:
        ``reward(x: (n,) int) -> (n,)``, a :class:`Reward`.
    """
    values = _vector("values", values)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"the reward expects state indices of shape (n,); got {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"the reward expects integer state indices; got dtype {x.dtype}.")
        if _checks.is_concrete(x) and x.size:
            a = np.asarray(x)
            if a.min() < 0 or a.max() >= values.shape[0]:
                raise ValueError(
                    f"the reward expects state indices in [0, {values.shape[0] - 1}] (one per "
                    f"entry of `values`); got values in [{a.min()}, {a.max()}].")
        return scale * values[x]

    return Reward("table", dict(values=values, scale=scale), reward)


def _check_scale(scale: ArrayLike) -> ArrayLike:
    if jnp.ndim(scale) != 0:
        raise ValueError(f"`scale` must be a scalar (it may be traced); got shape "
                         f"{jnp.shape(scale)}.")
    return scale


def _check_classifier(classifier: Any) -> int:
    """Checks the classifier interface the rewards use; returns its number of classes."""
    num_classes = getattr(classifier, "num_classes", None)
    if not callable(getattr(classifier, "probabilities", None)) or not isinstance(
            num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise ValueError(
            "`classifier` must be a selfconsume.classifier.Classifier (or have an int "
            f"`num_classes` and a `probabilities(x)` method); got {type(classifier).__name__}.")
    return int(num_classes)


def _class_probabilities(classifier: Any, x: Array) -> Array:
    """``(n, C)`` probabilities of a batch ``x`` of shape ``(n, *input_shape)`` or ``(n, d)``."""
    x = jnp.asarray(x)
    q = classifier.probabilities(x)
    if q.ndim != 2 or x.ndim == 0 or q.shape[0] != x.shape[0]:
        input_shape = tuple(getattr(classifier, "input_shape", ("...",)))
        expected = f"(n, {', '.join(map(str, input_shape))})"
        if len(input_shape) > 1 and all(isinstance(s, int) for s in input_shape):
            expected += f" or (n, {math.prod(input_shape)})"
        raise ValueError(f"the reward expects samples of shape {expected}, one batch axis; got "
                         f"shape {x.shape}.")
    return q


def class_probability(classifier: Any, class_index: int, *,
                      scale: ArrayLike = 1.0) -> Reward:
    """The reward ``scale * q_{class_index}(x)``: a classifier's probability of one class.

    Args:
        classifier: a :class:`selfconsume.classifier.Classifier` with ``C = num_classes``.
        class_index: static class index in ``[0, C)`` (CIFAR-10: 0 is airplane).
        scale: reward scale (may be traced, e.g. swept under ``vmap``).

    Returns:
        ``reward(x: (n, *input_shape) or (n, d)) -> (n,)``, a :class:`Reward` (equal to another
        only for the same classifier object).
    """
    num_classes = _check_classifier(classifier)
    if isinstance(class_index, bool) or not isinstance(class_index, numbers.Integral) or not (
            0 <= class_index < num_classes):
        raise ValueError(f"`class_index` must be an integer in [0, num_classes) = [0, "
                         f"{num_classes}); got {class_index!r}.")
    class_index = int(class_index)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * _class_probabilities(classifier, x)[:, class_index]

    return Reward("class_probability",
                  dict(classifier=identity_key(classifier), class_index=class_index, scale=scale),
                  reward)


def confidence(classifier: Any, *, scale: ArrayLike = 1.0) -> Reward:
    """The reward ``scale * max_i q_i(x)``: the classifier's confidence in its predicted class.

    Args:
        classifier: a :class:`selfconsume.classifier.Classifier`.
        scale: reward scale (may be traced).

    Returns:
        ``reward(x: (n, *input_shape) or (n, d)) -> (n,)``, a :class:`Reward` (equal to another
        only for the same classifier object).
    """
    _check_classifier(classifier)
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * jnp.max(_class_probabilities(classifier, x), axis=1)

    return Reward("confidence", dict(classifier=identity_key(classifier), scale=scale), reward)


def log_density(model: Any, params: PyTree, *, scale: ArrayLike = 1.0) -> Reward:
    """The reward ``scale * log p_params(x)`` of a generative model with a tractable density.

    Args:
        model: a :class:`selfconsume.models.GenerativeModel` whose ``log_prob`` is not ``None``.
        params: the model's params (closed over; may be traced).
        scale: reward scale (may be traced).

    Returns:
        ``reward(x) -> (n,)`` for the samples ``x`` the model's ``log_prob`` accepts, a
        :class:`Reward` (equal to another for an equal model and the same params object).
    """
    if not hasattr(model, "log_prob"):
        raise ValueError(f"`model` must be a selfconsume.models.GenerativeModel; got "
                         f"{type(model).__name__}.")
    if model.log_prob is None:
        raise ValueError(
            f"`model` ({getattr(model, 'name', type(model).__name__)!r}) has no tractable density "
            "(model.log_prob is None); log_density needs a family with a log_prob, e.g. "
            "gaussian, gmm, kde or categorical.")
    _check_scale(scale)

    def reward(x: Array) -> Array:
        return scale * model.log_prob(params, x)

    return Reward("log_density", dict(model=model, params=identity_key(params), scale=scale),
                  reward)


REWARDS = _checks.Registry("reward", {
    "distance": distance, "linear": linear, "table": table,
    "class_probability": class_probability, "confidence": confidence,
    "log_density": log_density})
"""Registry: reward name -> factory (an unknown name raises a ``ValueError`` that is also a
``KeyError``)."""
