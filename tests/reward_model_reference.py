"""Slow NumPy/SciPy references for the reward models (float64, independent of the package).

* Plackett–Luce: the log-likelihood of a label by an explicit loop over groups and positions
  (:func:`log_likelihood_loop`), a vectorised form with its gradient and Hessian in the rewards
  (:func:`pl_terms`), and the probability of a full ranking (:func:`ranking_probability`).
* The penalised loss ``-sum_g w_g ll_g / sum_g w_g + l2/2 |theta|^2`` of each family with its
  analytic gradient (:func:`tabular_loss`, :func:`linear_loss`, :func:`mlp_loss`), minimised by
  :func:`minimize` (scipy BFGS, tight ``gtol``).
* The influence score of a flip for the tabular model (:func:`tabular_influence`) and the actual
  change of J after flipping one group and refitting (:func:`refit_after_flip`).
* The population loss of the tabular model with infinitely many pairs, by enumeration of the
  ordered pairs (:func:`population_loss`), and its minimiser (:func:`population_fit`).

Judges are plain tuples: ``("luce", beta)``, ``("thurstone", sigma)``,
``("adversarial", base, eps)``, ``("mixture", [specs], weights)``.
"""

import itertools
import math

import numpy as np
from scipy import optimize, special

# --------------------------------------------------------------------------------------------
# Plackett–Luce
# --------------------------------------------------------------------------------------------


def log_likelihood_loop(rewards, order, depth):
    """``(G,)`` sum over the first ``depth`` positions j of ``u[pi(j)] - log sum_{l >= j}
    exp(u[pi(l)])``, group by group and position by position."""
    rewards, order = np.asarray(rewards, np.float64), np.asarray(order)
    g_count, k = rewards.shape
    out = np.zeros(g_count)
    for g in range(g_count):
        for j in range(min(depth, k)):
            tail = [rewards[g, order[g, l]] for l in range(j, k)]
            top = max(tail)
            out[g] += rewards[g, order[g, j]] - (top + math.log(sum(math.exp(t - top)
                                                                    for t in tail)))
    return out


def pl_terms(rewards, order, depth):
    """``(ll (G,), grad (G, k), hess (G, k, k))``: the log-likelihoods and their derivatives in the
    ``(G, k)`` rewards (in the positions of the samples, not of the ranking)."""
    rewards, order = np.asarray(rewards, np.float64), np.asarray(order)
    g_count, k = rewards.shape
    ranked = np.take_along_axis(rewards, order, axis=1)
    ll = np.zeros(g_count)
    grad_ranked = np.zeros((g_count, k))
    hess_ranked = np.zeros((g_count, k, k))
    for j in range(min(depth, k)):
        tail = ranked[:, j:]
        s = special.softmax(tail, axis=1)
        ll += ranked[:, j] - special.logsumexp(tail, axis=1)
        grad_ranked[:, j] += 1.0
        grad_ranked[:, j:] -= s
        hess_ranked[:, j:, j:] -= (s[:, :, None] * np.eye(k - j)[None]
                                   - s[:, :, None] * s[:, None, :])
    grad = np.zeros((g_count, k))
    hess = np.zeros((g_count, k, k))
    rows = np.arange(g_count)[:, None]
    grad[rows, order] = grad_ranked
    hess[rows[:, :, None], order[:, :, None], order[:, None, :]] = hess_ranked
    return ll, grad, hess


def ranking_probability(order, rewards, beta):
    """Plackett–Luce probability of the full ranking ``order`` of ``rewards`` at ``beta``
    (``beta = inf``: the rankings consistent with the rewards, uniformly)."""
    r = np.asarray(rewards, np.float64)
    if math.isinf(beta):
        perms = [pp for pp in itertools.permutations(range(len(r)))
                 if all(r[pp[i]] >= r[pp[i + 1]] for i in range(len(r) - 1))]
        return (tuple(order) in perms) / len(perms)
    prob, rest = 1.0, list(range(len(r)))
    for j in order:
        w = np.exp(beta * (r[rest] - r[rest].max()))
        prob *= math.exp(beta * (r[j] - r[rest].max())) / w.sum()
        rest.remove(j)
    return prob


# --------------------------------------------------------------------------------------------
# Penalised losses of the families, with gradients
# --------------------------------------------------------------------------------------------


def _pl_loss(u, order, depth, weights):
    """(loss, dloss/du) of the weighted mean negative log-likelihood, u ``(G, k)``."""
    ll, grad, _ = pl_terms(u, order, depth)
    w = np.asarray(weights, np.float64)
    return -np.sum(w * ll) / w.sum(), -(w[:, None] * grad) / w.sum()


def tabular_loss(theta, states, order, depth, weights, l2):
    """Tabular model: ``u(x) = theta[x]`` on ``(G, k)`` integer states."""
    states = np.asarray(states)
    value, du = _pl_loss(theta[states], order, depth, weights)
    grad = np.bincount(states.reshape(-1), weights=du.reshape(-1), minlength=theta.size)
    return value + 0.5 * l2 * theta @ theta, grad + l2 * theta


def tabular_hessian(theta, states, order, depth, weights, l2):
    states = np.asarray(states)
    _, _, hess = pl_terms(theta[states], order, depth)
    w = np.asarray(weights, np.float64)
    out = np.zeros((theta.size, theta.size))
    for g in range(states.shape[0]):
        for a in range(states.shape[1]):
            for b in range(states.shape[1]):
                out[states[g, a], states[g, b]] -= w[g] * hess[g, a, b] / w.sum()
    return out + l2 * np.eye(theta.size)


def coordinates(x):
    x = np.asarray(x, np.float64)
    return x.reshape(x.shape[0], -1)


def radial(x, centers, bandwidth):
    x = coordinates(x)
    c = np.asarray(centers, np.float64).reshape(len(centers), -1)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)
    return np.exp(-d2 / (2.0 * bandwidth ** 2))


def linear_loss(theta, features, order, depth, weights, l2):
    """Linear model on precomputed ``(G, k, F)`` features: ``u = features @ theta``."""
    value, du = _pl_loss(features @ theta, order, depth, weights)
    return value + 0.5 * l2 * theta @ theta, np.einsum("gk,gkf->f", du, features) + l2 * theta


def mlp_forward(layers, x):
    """A SiLU network: ``layers`` a list of ``(W, b)``; returns the rewards and the cache."""
    h, cache = coordinates(x), []
    for i, (w, b) in enumerate(layers):
        z = h @ w + b
        cache.append((h, z))
        h = z if i == len(layers) - 1 else z * special.expit(z)
    return h[:, 0], cache


def mlp_loss(flat, shapes, samples, order, depth, weights, l2):
    """MLP on ``(G, k, dim)`` samples, parameters flattened by :func:`flatten`."""
    layers = unflatten(flat, shapes)
    g_count, k = order.shape
    u, cache = mlp_forward(layers, samples.reshape(g_count * k, -1))
    value, du = _pl_loss(u.reshape(g_count, k), order, depth, weights)
    delta = du.reshape(-1, 1)  # dloss / d(output pre-activation)
    grads = []
    for i in reversed(range(len(layers))):
        h, z = cache[i]
        if i < len(layers) - 1:  # through the SiLU: d/dz [z sigmoid(z)]
            s = special.expit(z)
            delta = delta * (s + z * s * (1 - s))
        grads.append((h.T @ delta, delta.sum(axis=0)))
        delta = delta @ layers[i][0].T
    grads = grads[::-1]
    grad = flatten(grads) + l2 * flat
    return value + 0.5 * l2 * flat @ flat, grad


def flatten(layers):
    return np.concatenate([np.concatenate([np.ravel(w), np.ravel(b)]) for w, b in layers])


def unflatten(flat, shapes):
    layers, at = [], 0
    for w_shape, b_shape in shapes:
        nw, nb = int(np.prod(w_shape)), int(np.prod(b_shape))
        layers.append((flat[at:at + nw].reshape(w_shape), flat[at + nw:at + nw + nb]))
        at += nw + nb
    return layers


def minimize(fun_and_grad, x0, gtol=1e-10):
    """scipy BFGS on ``fun_and_grad(x) -> (value, gradient)`` (float64)."""
    return optimize.minimize(fun_and_grad, np.asarray(x0, np.float64), jac=True, method="BFGS",
                             options={"gtol": gtol, "maxiter": 20_000})


def newton(fun_and_grad, hessian, x0, tol=1e-12, max_iterations=100):
    """Plain Newton steps with step halving on a strictly convex loss."""
    x = np.asarray(x0, np.float64)
    for _ in range(max_iterations):
        f, g = fun_and_grad(x)
        if np.max(np.abs(g)) <= tol:
            return x
        d = -np.linalg.solve(hessian(x), g)
        t = 1.0  # halve until the loss does not rise (beyond rounding)
        while fun_and_grad(x + t * d)[0] > f + 1e-14 * abs(f) and t > 1e-10:
            t /= 2
        x = x + t * d
    raise RuntimeError("newton did not converge")


# --------------------------------------------------------------------------------------------
# Influence of one flip (tabular)
# --------------------------------------------------------------------------------------------


def cov_objective(theta, theta_clean, states):
    """``J = Cov(e^{u_c}, e^{u})`` over the compared samples (population covariance), with both
    exponentials divided by ``e^{max u_c}`` as the package does (a positive constant factor
    ``e^{-2 max u_c}`` on J: the ranking of the flips is unchanged)."""
    x = np.asarray(states).reshape(-1)
    shift = np.max(theta_clean[x])
    e_c, e = np.exp(theta_clean[x] - shift), np.exp(theta[x] - shift)
    return np.mean((e_c - e_c.mean()) * (e - e.mean()))


def tabular_influence(theta_clean, states, order, depth, weights, l2):
    """Per group, ``w_g / W * grad J^T H^{-1} grad_theta [l_g(flipped) - l_g]`` at the clean fit,
    i.e. minus the first-order change of J when the group's label is reversed."""
    states = np.asarray(states)
    x = states.reshape(-1)
    shift = np.max(theta_clean[x])
    e_c = np.exp(theta_clean[x] - shift)
    grad_j = np.bincount(x, weights=(e_c - e_c.mean()) * e_c / x.size, minlength=theta_clean.size)
    hess = tabular_hessian(theta_clean, states, order, depth, weights, l2)
    v = np.linalg.solve(hess, grad_j)
    u = theta_clean[states]
    _, grad_keep, _ = pl_terms(u, order, depth)
    _, grad_flip, _ = pl_terms(u, order[:, ::-1], depth)
    w = np.asarray(weights, np.float64)
    out = np.zeros(states.shape[0])
    for g in range(states.shape[0]):
        d_theta = np.zeros(theta_clean.size)  # grad_theta of l_g(flip) - l_g = ll_g - ll_g(flip)
        np.add.at(d_theta, states[g], grad_keep[g] - grad_flip[g])
        out[g] = w[g] / w.sum() * (v @ d_theta)
    return out


def fit_tabular(states, order, depth, weights, l2, num_states, x0=None):
    x0 = np.zeros(num_states) if x0 is None else x0
    return newton(lambda t: tabular_loss(t, states, order, depth, weights, l2),
                  lambda t: tabular_hessian(t, states, order, depth, weights, l2), x0)


def refit_after_flip(theta_clean, states, order, depth, weights, l2):
    """``(G,)`` the actual change of J when group g alone is flipped and the model refitted."""
    j_clean = cov_objective(theta_clean, theta_clean, states)
    out = np.zeros(states.shape[0])
    for g in range(states.shape[0]):
        flipped = np.array(order)
        flipped[g] = flipped[g, ::-1]
        theta = fit_tabular(states, flipped, depth, weights, l2, theta_clean.size, theta_clean)
        out[g] = cov_objective(theta, theta_clean, states) - j_clean
    return out


# --------------------------------------------------------------------------------------------
# Population loss of pairs (tabular)
# --------------------------------------------------------------------------------------------


def pair_probability(judge, delta):
    """P(the first of a pair is preferred) when its true reward exceeds the other's by delta."""
    kind = judge[0]
    if kind == "luce":
        beta = judge[1]
        if math.isinf(beta):
            return 0.5 * (1.0 + np.sign(delta))
        return special.expit(beta * delta)
    if kind == "thurstone":
        sigma = judge[1]
        if sigma == 0:
            return 0.5 * (1.0 + np.sign(delta))
        return special.ndtr(delta / (sigma * math.sqrt(2.0)))
    if kind == "adversarial":
        _, base, eps = judge
        return (1 - eps) * pair_probability(base, delta) + eps * pair_probability(base, -delta)
    if kind == "mixture":
        _, specs, weights = judge
        return sum(w * pair_probability(s, delta) for s, w in zip(specs, weights))
    raise ValueError(kind)


def margin_shares(p, r, eps):
    """``(M, M)`` the share of each ordered pair (x, y) flipped when the pairs of largest
    ``|r_x - r_y|`` are flipped first, up to a mass ``eps`` (a level that does not fit whole is
    flipped in proportion), walking down the distinct margins."""
    m = len(p)
    mass = np.outer(p, p)
    margin = np.abs(np.subtract.outer(r, r))
    share = np.zeros((m, m))
    budget = eps
    for level in sorted(set(margin.reshape(-1).tolist()), reverse=True):
        on = margin == level
        here = mass[on].sum()
        if here <= 0:
            continue
        take = min(here, budget)
        share[on] = take / here
        budget -= take
        if budget <= 0:
            break
    return share


def population_loss(u, p, r, judge, eps, flip, l2):
    """(loss, gradient) of ``-sum_{x,y} p_x p_y [q log sigmoid(u_x - u_y) + (1 - q) log
    sigmoid(u_y - u_x)] + l2/2 |u|^2``, by a loop over the ordered pairs."""
    p, r, u = (np.asarray(a, np.float64) for a in (p, r, u))
    m = len(p)
    share = np.full((m, m), eps) if flip == "random" else margin_shares(p, r, eps)
    value, grad = 0.5 * l2 * u @ u, l2 * u
    for x in range(m):
        for y in range(m):
            prefer = pair_probability(judge, r[x] - r[y])
            q = (1 - share[x, y]) * prefer + share[x, y] * (1 - prefer)
            d = u[x] - u[y]
            value -= p[x] * p[y] * (q * special.log_expit(d) + (1 - q) * special.log_expit(-d))
            slope = p[x] * p[y] * (special.expit(d) - q)
            grad[x] += slope
            grad[y] -= slope
    return value, grad


def population_hessian(u, p, l2):
    """The Hessian of :func:`population_loss` (it does not depend on the labels)."""
    p, u = np.asarray(p, np.float64), np.asarray(u, np.float64)
    out = l2 * np.eye(len(p))
    for x in range(len(p)):
        for y in range(len(p)):
            s = special.expit(u[x] - u[y])
            c = p[x] * p[y] * s * (1 - s)
            out[x, x] += c
            out[y, y] += c
            out[x, y] -= c
            out[y, x] -= c
    return out


def population_fit(p, r, judge, eps, flip, l2):
    """The minimiser of :func:`population_loss`, by Newton's method from 0."""
    return newton(lambda u: population_loss(u, p, r, judge, eps, flip, l2),
                  lambda u: population_hessian(u, p, l2), np.zeros(len(p)), tol=1e-13)
