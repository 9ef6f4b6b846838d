r"""The Luce choice kernels shared by the curators and the exact theory (private).

:math:`\beta (r - r_{\rm ref})` with the package's conventions for infinities and NaN
(:func:`scaled_rewards`), the shifted log-weights of a group (:func:`group_logits`) and one
inverse-CDF draw per group (:func:`inverse_cdf_choice`); :mod:`selfconsume.curation` documents
the rule they implement.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from selfconsume import _checks
from selfconsume.types import Array, ArrayLike, PRNGKey


def scaled_rewards(rewards: ArrayLike, beta: ArrayLike, reference: ArrayLike) -> Array:
    r"""Computes :math:`\beta (r - r_{\rm ref})` with the conventions the package relies on.

    A reward equal to ``reference`` maps to 0 (also for ``beta = inf`` or infinite rewards); with
    ``beta = inf`` rewards below the reference map to ``-inf`` (and above it to ``+inf``); NaN
    rewards, and ``0 * inf`` products, map to ``-inf``.

    Args:
        rewards: ``(...)`` rewards.
        beta: scalar inverse temperature, ``>= 0``, possibly ``inf``, possibly traced.
        reference: rewards broadcastable against ``rewards`` (usually their maximum).

    Returns:
        Array shaped like ``rewards``: the log-weights :math:`\log e^{\beta (r - r_{\rm ref})}`.
    """
    rewards = jnp.asarray(rewards)
    z = jnp.where(rewards == reference, 0.0, beta * (rewards - reference))
    return jnp.where(jnp.isnan(z), -jnp.inf, z).astype(rewards.dtype)


def traced_ok(beta, num_candidates=None, *, k=None):
    """The traced predicate of the value checks on ``beta`` (``>= 0``, not NaN) and
    ``num_candidates`` (in ``[1, k]``), from the traced ones only (concrete ones have raised
    already): a Python ``True`` when neither is traced."""
    ok = True
    if not _checks.is_concrete(beta):
        ok = ok & _checks.scalar_ok(beta, minimum=0.0)
    if num_candidates is not None and not _checks.is_concrete(num_candidates):
        ok = ok & _checks.scalar_ok(num_candidates, minimum=1, maximum=k)
    return ok


def as_float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def group_logits(rewards: Array, beta: ArrayLike, num_candidates=None) -> Array:
    """Log-weights over the last axis, shifted so that the best valid candidate has logit 0."""
    slot = jax.lax.broadcasted_iota(jnp.int32, rewards.shape, rewards.ndim - 1)
    allowed = jnp.ones(rewards.shape, bool) if num_candidates is None else slot < num_candidates
    valid = ~jnp.isnan(rewards) & allowed
    best = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(valid, scaled_rewards(rewards, beta, best), -jnp.inf)
    # A group with no valid candidate (all NaN) is chosen from uniformly among its allowed slots.
    none_valid = ~jnp.any(valid, axis=-1, keepdims=True)
    return jnp.where(none_valid, jnp.where(allowed, 0.0, -jnp.inf), logits)


def inverse_cdf_choice(key: PRNGKey, logits: Array) -> Array:
    """One draw per row of ``logits`` ``(n, k)`` (max 0 per row) from ``softmax(logits)``.

    Inverse CDF with one uniform per row. A candidate of zero weight is never returned: its partial
    sum equals the previous one, so no uniform falls between them; a uniform rounded up to the total
    is sent to the last candidate of positive weight.
    """
    weights = jnp.exp(logits)
    cdf = jnp.cumsum(weights, axis=-1)
    u = jax.random.uniform(key, logits.shape[:-1] + (1,), dtype=logits.dtype) * cdf[..., -1:]
    index = jnp.sum(cdf <= u, axis=-1, dtype=jnp.int32)
    slot = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    last = jnp.max(jnp.where(weights > 0, slot, 0), axis=-1)
    return jnp.minimum(index, last)
