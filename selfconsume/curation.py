r"""K-way Bradley–Terry (Luce) curation of generated samples (the default rule of :func:`curate`;
every other choice rule, sampled and exact, is a curator of :mod:`selfconsume.curators`, passed
as ``curate(..., curator=...)``).

A curator shown ``k`` candidates :math:`x_1, \dots, x_k` with rewards :math:`r_1, \dots, r_k` keeps
candidate :math:`j` with probability

.. math::  P(j) = \operatorname{softmax}(\beta r)_j = \frac{e^{\beta r_j}}{\sum_{i=1}^k e^{\beta r_i}}.

``k = 2`` is the Bradley–Terry model; ``k = 1`` or ``beta = 0`` keeps a uniformly random candidate
(no curation); ``beta = +inf`` keeps the best candidate, ties broken uniformly at random.

Sampling is by inverse CDF within each group, on rewards shifted by the group maximum so that no
``exp`` can overflow: with :math:`e_j = e^{\beta (r_j - \max_i r_i)}` and the partial sums
:math:`S_j = \sum_{i \le j} e_i`, one uniform :math:`U` per group keeps the candidate
:math:`\#\{j : S_j \le U S_k\}`. That is one random number per group, where the Gumbel-max
identity :math:`\arg\max_j (\beta r_j + G_j) \sim P` needs ``k`` of them and two logarithms
each (``benchmarks/bench_curation.py`` compares the two). Conventions: NaN rewards get
probability 0 while a non-NaN candidate exists in the group; a group whose rewards are all NaN is
chosen from uniformly (and its NaN reward is kept, so it remains visible).

**Validation** (the rule of :mod:`selfconsume._checks`). Shapes and the static ``k`` raise
``ValueError`` at trace time. ``beta`` (``>= 0``, inf allowed) and ``num_candidates`` (in
``[1, k]``) raise the same ``ValueError`` at once when concrete; when traced (``jit``, ``vmap``,
``scan``) an invalid value makes every floating output NaN (:func:`selfconsume._checks.poison`):
the probabilities of :func:`choice_probabilities`; the kept rewards, and the kept samples when
they are floating, of :func:`curate` (integer samples and the ``index`` stay as drawn). The check
is one scalar comparison, and nothing for concrete values; NaN rewards are data, not an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from selfconsume import _checks
from selfconsume import curators as curators_lib
from selfconsume._choice import (as_float, group_logits, inverse_cdf_choice, scaled_rewards,
                                 traced_ok)
from selfconsume.curators import Curator, Luce, read_column
from selfconsume.types import Array, ArrayLike, Curated, PRNGKey

__all__ = ["curate", "choice_probabilities", "scaled_rewards"]


def choice_probabilities(rewards: ArrayLike, *, beta: ArrayLike = 1.0) -> Array:
    r"""Probability that each candidate is kept: :math:`\operatorname{softmax}(\beta r)` over the last axis.

    Args:
        rewards: ``(..., k)`` rewards of the candidates of each group.
        beta: scalar inverse temperature ``>= 0`` (``jnp.inf`` = best-of-k, ties shared equally);
            may be traced.

    Returns:
        ``(..., k)`` probabilities summing to 1 over the last axis.

    Raises:
        ValueError: if ``rewards`` is a scalar or ``beta`` is not a non-negative scalar (a traced
            ``beta`` that is negative or NaN makes the probabilities NaN instead).
    """
    rewards = as_float(rewards)
    if rewards.ndim == 0 or rewards.shape[-1] == 0:
        raise ValueError(
            f"`rewards` must have a non-empty last axis (the candidates); got shape {rewards.shape}.")
    _checks.scalar("beta", beta, minimum=0.0)
    return _checks.poison(traced_ok(beta), jax.nn.softmax(group_logits(rewards, beta), axis=-1))


def curate(
    key: PRNGKey,
    samples: ArrayLike,
    rewards: ArrayLike,
    *,
    k: int,
    beta: ArrayLike = 1.0,
    num_candidates: ArrayLike | None = None,
    curator: Curator | None = None,
) -> Curated:
    r"""Keeps candidates out of each group of ``k``: by default one, with the K-way Bradley–Terry
    rule; with ``curator``, by that rule (:mod:`selfconsume.curators`).

    Group ``g`` is made of rows ``[g*k, (g+1)*k)`` of ``samples``; without a curator, candidate
    ``j`` of the group is kept with probability ``softmax(beta * rewards[g*k:(g+1)*k])[j]``.

    Args:
        key: a PRNG key (``jax.random.key``), consumed.
        samples: ``(n*k, ...)`` iid candidates of any trailing shape and dtype (int32 state
            indices, vectors, images).
        rewards: ``(n*k,)`` their rewards, or ``(n*k, R)`` with a curator (R reward functions;
            the curator's ``column`` says which it reads).
        k: static number of candidates per group, ``>= 1``. ``k = 1`` returns the candidates
            unchanged (and does not use ``key``).
        beta: scalar inverse temperature ``>= 0``, possibly traced so that a sweep over it does not
            recompile; ``jnp.inf`` keeps the best candidate, ties broken uniformly at random.
        num_candidates: optional scalar int (possibly traced) in ``[1, k]``: only the first
            ``num_candidates`` candidates of each group compete; the rest are ignored. Lets a sweep
            vary the effective K inside one compiled program. Luce only (``curator`` ``None``
            or :func:`~selfconsume.curators.luce`).
        curator: a :class:`~selfconsume.curators.Curator`; ``None`` means ``luce(beta)``. With a
            curator, leave ``beta`` at its default (the curator holds its own rates).

    Returns:
        :class:`~selfconsume.Curated` with ``samples`` ``(n*m, ...)``, ``rewards`` ``(n*m,)`` (or
        ``(n*m, R)``) and ``index`` ``(n*m,)`` int32, group by group, where m is the number the
        curator keeps per group (1 by default, ``m`` for ``top_m(m)``): ``index`` is the position
        of each kept row inside its group, in ``[0, k)``; for ``top_fraction`` (pooled, n rows)
        it is the row among the ``n*k`` candidates (its group is ``index // k``).

    Raises:
        ValueError: if ``k < 1``, ``rewards`` is not 1-D, its length is zero or not a multiple of
            ``k``, ``samples`` and ``rewards`` have different leading sizes, ``beta`` is not a
            non-negative scalar, or ``num_candidates`` is not in ``[1, k]``. Traced values out of
            range raise nothing: the floating outputs are NaN (module docstring, Validation).
    """
    k = _checks.static_int("k", k, minimum=1)
    rewards = as_float(rewards)
    samples = jnp.asarray(samples)
    if curator is not None:
        return _curate_with(key, samples, rewards, k=k, beta=beta, num_candidates=num_candidates,
                            curator=curator)
    if rewards.ndim != 1:
        raise ValueError(f"`rewards` must be 1-D with shape (n*k,); got shape {rewards.shape}.")
    if rewards.shape[0] == 0:
        raise ValueError("`rewards` must not be empty; got shape (0,).")
    _check_groups(samples, rewards, k)
    _checks.scalar("beta", beta, minimum=0.0)
    if num_candidates is not None:
        _checks.scalar("num_candidates", num_candidates, minimum=1, maximum=k)
    ok = traced_ok(beta, num_candidates, k=k)
    n = rewards.shape[0] // k
    if k == 1:
        kept = Curated(samples=samples, rewards=rewards, index=jnp.zeros((n,), jnp.int32))
    else:
        logits = group_logits(rewards.reshape(n, k), beta, num_candidates)
        index = inverse_cdf_choice(key, logits)
        rows = jnp.arange(n, dtype=jnp.int32) * k + index
        kept = Curated(samples=samples[rows], rewards=rewards[rows], index=index)
    return _checks.poison(ok, kept)


def _check_groups(samples, rewards, k: int) -> None:
    """``n*k`` rows of rewards, and as many samples."""
    if rewards.shape[0] % k:
        raise ValueError(
            f"the number of rewards must be a multiple of `k`={k}; got {rewards.shape[0]}.")
    if samples.ndim == 0:
        raise ValueError("`samples` must have a leading axis of size n*k; got a scalar.")
    _checks.same_length("samples", samples, "rewards", rewards)


def _curate_with(key, samples, rewards, *, k, beta, num_candidates, curator):
    """:func:`curate` with a curator: checks, then ``curator.keep``."""
    curators_lib.check(curator, beta=beta)
    if rewards.ndim not in (1, 2) or rewards.shape[0] == 0:
        raise ValueError(f"`rewards` must be (n*k,) or (n*k, R) and non-empty; got shape "
                         f"{rewards.shape}.")
    _check_groups(samples, rewards, k)
    table = rewards if rewards.ndim == 2 else rewards[:, None]
    for column in curator.columns():
        read_column(table[:1], column)  # raises for a column the rewards do not have
    curator.kept(k)  # raises for top_m(m) with m > k
    ok = curator.ok()
    if num_candidates is not None:
        if not isinstance(curator, Luce):
            raise ValueError(f"`num_candidates` applies to the luce curator only; got "
                             f"{curator.name!r}.")
        _checks.scalar("num_candidates", num_candidates, minimum=1, maximum=k)
        ok = ok & traced_ok(1.0, num_candidates, k=k)
        n = rewards.shape[0] // k
        index = curator.choose(key, table.reshape(n, k, -1), num_candidates)[:, 0]
        rows = jnp.arange(n, dtype=jnp.int32) * k + index
    else:
        rows, index = curator.keep(key, table, k=k)
    kept = Curated(samples=samples[rows], rewards=rewards[rows], index=index.astype(jnp.int32))
    return _checks.poison(ok, kept)
