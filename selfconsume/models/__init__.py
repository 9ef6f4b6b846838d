r"""Generative model families as pure functions over a params pytree.

Every family is a :class:`GenerativeModel`: pure functions closed over static sizes
(``num_states``, ``dim``, ``num_components``, ``em_steps``) fixed by the factory, and the factory's
options.

* ``init(key, data, weights=None) -> params``: fit from scratch.
* ``fit(key, params, data, weights=None) -> params``: weighted maximum likelihood, warm-started at
  ``params`` (closed-form families ignore the previous params, except the recorded data scale).
* ``sample(key, params, num_samples) -> x``: ``num_samples`` is a static Python int.
* ``log_prob(params, x) -> (n,)``: ``None`` where the family has no tractable density.
* ``conform(params, like) -> params``: ``None`` where the params' shapes never change.

Weights are per-sample, non-negative and not all zero, shape ``(N,)``; ``None`` means uniform.
They need not sum to one: every family fits the normalised weights :math:`w_n / \sum_m w_m`, i.e.
maximises :math:`\sum_n w_n \log p_\theta(x_n)`.

Params are frozen ``flax.struct.dataclass``es, so every function is jittable and vmappable over keys
and params, e.g. ``jax.vmap(model.fit, in_axes=(0, 0, None, None))``. Nothing is jitted here.

Validation follows :mod:`selfconsume._checks`: ranks, trailing sizes, the weights' shape and
``num_samples >= 1`` raise ``ValueError`` at trace time; when the data or weights are concrete (not
tracers), non-finite data and negative, non-finite or all-zero weights raise as well. Under ``jit``
the same value problems *poison* the result of ``init`` and ``fit``: every floating leaf of the
params is NaN (one extra reduction over the inputs), never a plausible-looking fit.

Models are values: two models built by the same factory with equal options compare and hash equal
(:class:`GenerativeModel`), so ``jax.jit(f, static_argnames="model")`` compiles once for both.
A family whose params change shape with the data (``kde``: the params hold the training points)
has ``conform(params, like)``, which re-expresses params in the shapes ``like`` (e.g.
``jax.eval_shape`` of ``fit``) without changing the distribution, for a ``lax.scan`` carry.

The Gaussian-based families (``gaussian``, ``gmm``, ``kde``) add a covariance floor
:math:`\delta = 100\,\epsilon\,\operatorname{tr}(\Sigma_{\rm data})/d + \sigma^2_{\min} s_0`: the
option ``min_variance`` :math:`= \sigma^2_{\min}` (default ``1e-15``) is *relative* to the scale
:math:`s_0` of the data given to ``init`` (the params leaf ``data_scale``, carried by ``fit``); see
:mod:`selfconsume.models._common`. A TOML study sets it with ``[model] options = { min_variance =
... }``.

Families (:data:`MODELS`): :func:`categorical`, :func:`gaussian`, :func:`gmm`, :func:`kde`,
:func:`flow_matching`, :func:`histogram` (the fully expressive model of continuous data on a grid).
"""

from __future__ import annotations

from typing import Callable

from selfconsume import _checks
from selfconsume.models._common import GenerativeModel
from selfconsume.models.categorical import CategoricalParams, categorical
from selfconsume.models.flow_matching import FlowParams, flow_matching
from selfconsume.models.gaussian import GaussianParams, gaussian
from selfconsume.models.gmm import GMMParams, gmm
from selfconsume.models.histogram import HistogramParams, histogram, histogram_centers
from selfconsume.models.kde import KDEParams, kde

__all__ = [
    "GenerativeModel",
    "MODELS",
    "get",
    "categorical",
    "gaussian",
    "gmm",
    "kde",
    "flow_matching",
    "histogram",
    "histogram_centers",
    "CategoricalParams",
    "GaussianParams",
    "GMMParams",
    "KDEParams",
    "FlowParams",
    "HistogramParams",
]


MODELS: dict[str, Callable[..., GenerativeModel]] = _checks.Registry("model", {
    "categorical": categorical,
    "gaussian": gaussian,
    "gmm": gmm,
    "kde": kde,
    "flow_matching": flow_matching,
    "histogram": histogram,
})
"""Registry: family name -> factory returning a :class:`GenerativeModel` (an unknown name raises
a ``ValueError`` that is also a ``KeyError``)."""


def get(name: str, /, **kwargs) -> GenerativeModel:
    """Builds the model family registered under ``name`` with the factory's arguments.

    Example: ``get("gmm", num_components=8, dim=2, em_steps=20)``.

    Raises:
        ValueError: if ``name`` is not a key of :data:`MODELS`.
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {sorted(MODELS)}; got {name!r}.")
    return MODELS[name](**kwargs)
