r"""The Luce choice kernels shared by the curators and the exact theory (private).

:math:`\beta (r - r_{\rm ref})` with the package's conventions for infinities and NaN
(:func:`scaled_rewards`), the shifted log-weights of a group (:func:`group_logits`) and one
inverse-CDF draw per group (:func:`inverse_cdf_choice`); :mod:`selfconsume.curation` documents
the rule they implement. The ranking kernels of :mod:`selfconsume.curators` follow: the first m
of each group by pairwise comparisons (:func:`pairwise_ranks`, :func:`first_m`) and the n best of
a pool by a bitwise search for the cut or ``lax.top_k`` (:func:`top_fraction_search`,
:func:`top_fraction_top_k`), each giving exactly the order of ``lax.sort`` on the same keys
several times faster (``benchmarks/bench_curation.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

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


PAIRWISE_MAX_K = 64  # above, TopM ranks with lax.sort (the pairwise work grows like k^2)


def pairwise_ranks(primary, g, *, block=32):
    """``rank[..., i]``: how many candidates of the group come before i in the order of
    ``lax.sort((-primary, -g, iota), num_keys=2)`` (0 = first). Pairwise comparisons, O(k^2) per
    group, challengers in blocks of ``block`` inside a ``fori_loop`` (one (n, block, k) comparison
    each: XLA:CPU slows down ten-fold on a single (n, 64, 64) one)."""
    n, k = primary.shape
    block = min(block, k)
    num_blocks = -(-k // block)
    pad = ((0, 0), (0, num_blocks * block - k))
    # padded challengers (-inf, -inf) come before nobody: the Gumbel noise is finite
    p_pad = jnp.pad(primary, pad, constant_values=-jnp.inf)
    g_pad = jnp.pad(g, pad, constant_values=-jnp.inf)
    p_i, g_i = primary[:, None, :], g[:, None, :]
    i = lax.broadcasted_iota(jnp.int32, (1, 1, k), 2)

    def add(b, rank):
        start = b * block
        p_j = lax.dynamic_slice_in_dim(p_pad, start, block, 1)[:, :, None]
        g_j = lax.dynamic_slice_in_dim(g_pad, start, block, 1)[:, :, None]
        j = lax.broadcasted_iota(jnp.int32, (1, block, 1), 1) + start
        before = (p_j > p_i) | ((p_j == p_i) & ((g_j > g_i) | ((g_j == g_i) & (j < i))))
        return rank + jnp.sum(before, axis=1, dtype=jnp.int32)

    return lax.fori_loop(0, num_blocks, add, jnp.zeros((n, k), jnp.int32))


def first_m(rank, m):
    """``(n, m)`` positions holding ranks 0, ..., m-1 (each row of ``rank`` a permutation)."""
    n, k = rank.shape
    if m <= 8:
        slot = lax.broadcasted_iota(jnp.int32, (1, m, 1), 1)
        i = lax.broadcasted_iota(jnp.int32, (1, 1, k), 2)
        return jnp.sum(jnp.where(rank[:, None, :] == slot, i, 0), axis=2)
    rows = lax.broadcasted_iota(jnp.int32, (n, k), 0)
    i = lax.broadcasted_iota(jnp.int32, (n, k), 1)
    return jnp.zeros((n, m), jnp.int32).at[rows, rank].set(i, mode="drop", unique_indices=True)


def _ordered_bits(x):
    """Unsigned integers in the order of the floats ``x`` (no NaN; -0.0 equal to +0.0)."""
    bits = jnp.finfo(x.dtype).bits
    kind = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[bits]
    b = lax.bitcast_convert_type(x + 0.0, kind)  # -0.0 + 0.0 = +0.0
    sign = jnp.asarray(1, kind) << (bits - 1)
    return jnp.where(b >= sign, ~b, b | sign)


def _kth_largest(keys, count, where=None):
    """The largest t with #{keys >= t} >= count (among ``where``): the k-th largest key, set bit
    by bit from the top, one counting pass over ``keys`` per bit."""
    bits = jnp.iinfo(keys.dtype).bits
    one = jnp.asarray(1, keys.dtype)

    def step(b, t):
        trial = t | (one << (bits - 1 - b).astype(keys.dtype))
        hit = keys >= trial if where is None else where & (keys >= trial)
        return jnp.where(jnp.sum(hit, dtype=jnp.int32) >= count, trial, t)

    return lax.fori_loop(0, bits, step, jnp.zeros((), keys.dtype))


def top_fraction_search(key, primary, n):
    """Rows of the n best of ``primary`` (sorted), ties at the cut to the larger uniform, then
    the lower row (the order of ``lax.sort((-primary, -u, iota), num_keys=2)``): cuts found by
    bitwise search, no sort. O(bits * n k)."""
    keys = _ordered_bits(primary)
    cut = _kth_largest(keys, n)
    above, tied = keys > cut, keys == cut
    need = n - jnp.sum(above, dtype=jnp.int32)  # >= 1 places for the tied

    def resolve(_):
        u = _ordered_bits(jax.random.uniform(key, primary.shape, primary.dtype))
        cut_u = _kth_largest(u, need, tied)
        above_u, at_u = tied & (u > cut_u), tied & (u == cut_u)
        left = need - jnp.sum(above_u, dtype=jnp.int32)
        first = lax.cond(jnp.sum(at_u, dtype=jnp.int32) == left, lambda a: a,
                         lambda a: a & (jnp.cumsum(a, dtype=jnp.int32) <= left), at_u)
        return above | above_u | first

    kept = lax.cond(jnp.sum(tied, dtype=jnp.int32) == need, lambda _: above | tied, resolve,
                    None)
    return jnp.nonzero(kept, size=n)[0].astype(jnp.int32)


def top_fraction_top_k(key, primary, n):
    """As :func:`top_fraction_search` with two ``lax.top_k`` (faster when n is a small
    fraction of the candidates). float32: XLA:CPU's TopK kernel."""
    primary = primary + 0.0  # TopK orders -0.0 below +0.0; the comparisons below do not
    # the barrier keeps XLA from decomposing this top_k into a full sort (it does when a slice
    # of the values other than a prefix is fused into a consumer)
    top, first = lax.optimization_barrier(lax.top_k(primary, n))
    cut = top[n - 1]
    above = jnp.sum(primary > cut, dtype=jnp.int32)  # first[:above], all kept
    tied = primary == cut
    slot = jnp.arange(n, dtype=jnp.int32)

    def resolve(_):
        u = jax.random.uniform(key, primary.shape, primary.dtype)
        _, winners = lax.top_k(jnp.where(tied, u, -1.0), n)  # larger u, then lower row
        return jnp.where(slot < above, first, winners[jnp.maximum(slot - above, 0)])

    rows = lax.cond(jnp.sum(tied, dtype=jnp.int32) == n - above, lambda _: first, resolve, None)
    return jnp.sort(rows)
