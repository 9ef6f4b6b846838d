r"""Damped Newton's method for the smooth, strictly convex fits (tabular and linear reward models,
the population comparison loss).

For :math:`f` strictly convex with gradient :math:`g` and Hessian :math:`H` (dense, on the
flattened parameters), each step solves :math:`H d = -g` (Cholesky) and halves the step
:math:`t` from 1 until the Armijo condition :math:`f(\theta + t d) \le f(\theta) + t\, c\,
g^\top d` holds (:math:`c = 10^{-4}`, at most 30 halvings); it stops when
:math:`\lVert g \rVert_\infty \le` ``tol`` or after ``max_iterations`` steps. Globally
convergent, quadratically so near the minimiser; the cost of a step is that of the Hessian,
:math:`O(P^2)` memory and :math:`O(P^3)` for the solve with P parameters.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = ["newton"]


def newton(loss: Callable, params, *, tol: float, max_iterations: int,
           hessian: Callable | None = None):
    """Minimises ``loss(params)`` (strictly convex, smooth) by damped Newton steps.

    Args:
        loss: ``params -> scalar``.
        params: the starting point, a pytree of floating arrays.
        tol: stop when the largest absolute entry of the gradient is at most ``tol``.
        max_iterations: static bound on the number of Newton steps.
        hessian: optional ``flat -> (P, P)`` Hessian on the flattened parameters (default
            ``jax.hessian``), for a structure autodiff would not exploit.

    Returns:
        ``(params, gradient_norm)``: the minimiser and the sup-norm of the gradient there (NaN
        when the loss is not finite).
    """
    flat0, unravel = ravel_pytree(params)
    f = lambda x: loss(unravel(x))  # noqa: E731
    grad = jax.grad(f)
    hess = jax.hessian(f) if hessian is None else hessian

    def cond(carry):
        _, g, it = carry
        err = jnp.max(jnp.abs(g)) if g.size else jnp.zeros((), g.dtype)
        return (it < max_iterations) & (err > tol)

    def body(carry):
        x, g, it = carry
        h = hess(x)
        chol = jnp.linalg.cholesky(h)
        d = -jax.scipy.linalg.cho_solve((chol, True), g)
        # A Hessian that is not positive definite to working precision: a gradient step.
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, -g)
        fx, slope = f(x), jnp.vdot(g, d)

        def shrink(state):
            t, _ = state
            return t / 2, f(x + t / 2 * d)

        def too_long(state):
            t, ft = state
            return (t > 2.0 ** -30) & ~(ft <= fx + 1e-4 * t * slope)

        t, _ = lax.while_loop(too_long, shrink, (jnp.ones((), x.dtype), f(x + d)))
        x = x + t * d
        return x, grad(x), it + 1

    flat, g, _ = lax.while_loop(cond, body, (flat0, grad(flat0), jnp.zeros((), jnp.int32)))
    err = jnp.max(jnp.abs(g)) if g.size else jnp.zeros((), g.dtype)
    return unravel(flat), jnp.where(jnp.isfinite(f(flat)), err, jnp.nan)
