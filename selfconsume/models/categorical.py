r"""The fully expressive model on a finite support: a categorical law on states ``0..M-1``.

Weighted maximum likelihood is the weighted frequency of each state,

.. math::  \hat p_j = \frac{\sum_n w_n \mathbb{1}[x_n = j]}{\sum_n w_n},

which does not depend on the previous params (``fit`` = ``init``). With ``data = arange(M)`` and
``weights = p`` it returns ``p`` itself, so a population law can be loaded exactly.

Sampling is by inverse CDF: :math:`x = \min\{j : F_j > u F_{M-1}\}` with :math:`F` the
cumulative sum of :math:`p` and :math:`u \sim U[0, 1)`, found by binary search, so ``n`` draws cost
:math:`O(M + n \log M)`. A state of probability 0 is never drawn.

Under ``jit``, invalid weights (negative, non-finite, all zero) or out-of-range states make
``init`` and ``fit`` return NaN ``probs`` (:func:`selfconsume._checks.poison`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from selfconsume import _checks
from selfconsume.models._common import (
    GenerativeModel,
    both,
    check_num_samples,
    check_param_shape,
    check_weights,
    float_dtype,
    inverse_cdf,
    options_key,
)
from selfconsume.types import Array, ArrayLike, PRNGKey

__all__ = ["CategoricalParams", "categorical"]


@struct.dataclass
class CategoricalParams:
    """Params of :func:`categorical`.

    Attributes:
        probs: ``(M,)`` state probabilities, non-negative, summing to one.
    """

    probs: Array


def _check_states(name: str, x: ArrayLike, num_states: int) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of state indices; got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"`{name}` must hold integer state indices; got dtype {x.dtype}.")
    if _checks.is_concrete(x) and x.size:
        a = np.asarray(x)
        if a.min() < 0 or a.max() >= num_states:
            raise ValueError(
                f"`{name}` must hold states in [0, {num_states - 1}] (num_states = {num_states}); "
                f"got values in [{a.min()}, {a.max()}].")
    return x


def categorical(num_states: int) -> GenerativeModel:
    """The categorical family on states ``0..num_states-1`` (the fully expressive model).

    Args:
        num_states: static number of states ``M >= 1``.

    Returns:
        A :class:`~selfconsume.models.GenerativeModel` named ``"categorical"`` whose params are
        :class:`CategoricalParams`. Data are int state indices of shape ``(N,)``; samples are int32
        of shape ``(num_samples,)``. Out-of-range states in the data raise outside ``jit``; under
        ``jit`` they poison the fit (NaN ``probs``), like invalid weights.

    Raises:
        ValueError: if ``num_states`` is not an integer >= 1.
    """
    m = _checks.static_int("num_states", num_states, minimum=1)

    def init(key: PRNGKey, data: ArrayLike, weights: ArrayLike | None = None) -> CategoricalParams:
        """Weighted frequencies of int ``data`` ``(N,)``, ``weights`` ``(N,)``; ``key`` unused."""
        del key
        x = _check_states("data", data, m)
        if x.shape[0] == 0:
            raise ValueError("`data` must hold at least one state; got shape (0,).")
        dtype = jnp.result_type(float) if weights is None else float_dtype(jnp.asarray(weights))
        w, ok = check_weights(weights, x.shape[0], dtype)
        if not _checks.is_concrete(x):  # concrete states were range-checked above
            ok = both(jnp.all((x >= 0) & (x < m)), ok)
        counts = jax.ops.segment_sum(w, x, num_segments=m)
        return _checks.poison(ok, CategoricalParams(probs=counts / jnp.sum(counts)))

    def fit(key: PRNGKey, params: CategoricalParams, data: ArrayLike,
            weights: ArrayLike | None = None) -> CategoricalParams:
        """Weighted frequencies (closed form); the previous ``params`` are not used."""
        check_param_shape("probs", params.probs, (m,))
        return init(key, data, weights)

    def sample(key: PRNGKey, params: CategoricalParams, num_samples: int) -> Array:
        """Draws ``num_samples`` iid states, int32 ``(num_samples,)``, by inverse CDF."""
        n = check_num_samples(num_samples)
        check_param_shape("probs", params.probs, (m,))
        return inverse_cdf(key, params.probs, (n,))

    def log_prob(params: CategoricalParams, x: ArrayLike) -> Array:
        """``log probs[x]`` for int states ``x`` ``(n,)``; ``-inf`` at probability 0 or outside."""
        check_param_shape("probs", params.probs, (m,))
        x = jnp.asarray(x)
        if x.ndim != 1 or not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(
                f"`x` must be a 1-D array of integer states; got shape {x.shape}, dtype {x.dtype}.")
        inside = (x >= 0) & (x < m)
        logp = jnp.log(params.probs)[jnp.clip(x, 0, m - 1)]
        return jnp.where(inside, logp, -jnp.inf)

    return GenerativeModel(name="categorical", init=init, fit=fit, sample=sample,
                           log_prob=log_prob, options=options_key(num_states=m))
