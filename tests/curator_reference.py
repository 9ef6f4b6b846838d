"""Slow NumPy references for the curators: enumeration of all K-tuples (and all rankings).

``keep_probabilities(spec, rewards)`` gives, for one group of k candidates with rewards
``(k, R)``, the probability that each is kept (divided by m when m > 1 are kept, so that it is
the law of one kept sample drawn uniformly among them); ``factor(spec, p, rewards, k)`` sums it
over all M**k tuples. Specs are plain tuples, independent of the package:

    ("luce", beta, column) ("top_m", m, beta, column) ("thurstone", sigma, column)
    ("adversarial", base_spec, eps) ("mixture", [specs], weights) ("sequential", first, second)

Pooled top-fraction selection: ``top_fraction_limit`` (its population limit) and
``top_fraction_counts`` (a simulation of its finite-n law).
"""

import functools
import itertools
import math

import numpy as np
from scipy import integrate, special


def _col(rewards, column):
    return rewards[:, 0 if column is None else column]


def _rankings(r, beta):
    """Every ordering of the k candidates with its Plackett–Luce probability (beta = inf: the
    orderings consistent with the rewards, uniformly)."""
    k = len(r)
    perms = list(itertools.permutations(range(k)))
    if math.isinf(beta):
        ok = [pp for pp in perms if all(r[pp[i]] >= r[pp[i + 1]] for i in range(k - 1))]
        return [(pp, 1.0 / len(ok)) for pp in ok]
    w = np.exp(beta * (r - r.max()))
    out = []
    for pp in perms:
        prob, rest = 1.0, list(range(k))
        for j in pp:
            prob *= w[j] / sum(w[i] for i in rest)
            rest.remove(j)
        out.append((pp, prob))
    return out


def _thurstone(r, sigma):
    return np.array(_thurstone_cached(tuple(float(x) for x in r), float(sigma)))


@functools.lru_cache(maxsize=None)
def _thurstone_cached(r, sigma):
    """P(candidate j has the largest r + sigma Z) by adaptive quadrature in Z_j (memoised on the
    tuple of rewards: the enumeration meets the same few tuples again and again)."""
    r = np.asarray(r)
    k = len(r)
    if sigma == 0:
        best = r == r.max()
        return tuple(best / best.sum())
    if math.isinf(sigma):
        return tuple(np.full(k, 1.0 / k))
    out = np.zeros(k)
    for j in range(k):
        others = np.array([r[i] for i in range(k) if i != j])

        def f(z):
            return (math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
                    * np.prod(special.ndtr((r[j] + sigma * z - others) / sigma)))
        out[j] = integrate.quad(f, -12, 12, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    return tuple(out)


def kept_count(spec, k):
    if spec[0] == "top_m":
        return spec[1]
    if spec[0] == "adversarial":
        return kept_count(spec[1], k)
    if spec[0] == "mixture":
        return kept_count(spec[1][0], k)
    return 1


def keep_probabilities(spec, rewards):
    """(k,) probability that each candidate is kept (over m when m are kept)."""
    rewards = np.asarray(rewards, np.float64)
    k = rewards.shape[0]
    kind = spec[0]
    if kind == "luce":
        _, beta, column = spec
        r = _col(rewards, column)
        if math.isinf(beta):
            best = r == r.max()
            return best / best.sum()
        w = np.exp(beta * (r - r.max()))
        return w / w.sum()
    if kind == "top_m":
        _, m, beta, column = spec
        out = np.zeros(k)
        for pp, prob in _rankings(_col(rewards, column), beta):
            for j in pp[:m]:
                out[j] += prob / m
        return out
    if kind == "thurstone":
        _, sigma, column = spec
        return _thurstone(_col(rewards, column), sigma)
    if kind == "adversarial":
        _, base, eps = spec
        return (1 - eps) * keep_probabilities(base, rewards) + eps * keep_probabilities(
            base, -rewards)
    if kind == "mixture":
        _, specs, weights = spec
        return sum(w * keep_probabilities(s, rewards) for s, w in zip(specs, weights))
    if kind == "sequential":
        _, first, second = spec
        assert first[0] == "top_m"
        _, m, beta, column = first
        out = np.zeros(k)
        for pp, prob in _rankings(_col(rewards, column), beta):
            shown = list(pp[:m])
            inner = keep_probabilities(second, rewards[shown])
            for i, j in enumerate(shown):
                out[j] += prob * inner[i]
        return out
    raise ValueError(kind)


def factor(spec, p, rewards, k):
    """H = kept law / p, by enumeration of all M**k tuples (states with p = 0 get 0)."""
    p = np.asarray(p, np.float64)
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim == 1:
        rewards = rewards[:, None]
    m = len(p)
    law = np.zeros(m)
    for tup in itertools.product(range(m), repeat=k):
        prob = np.prod(p[list(tup)])
        if prob == 0:
            continue
        keep = keep_probabilities(spec, rewards[list(tup)])
        for i, x in enumerate(tup):
            law[x] += prob * keep[i]
    return np.where(p > 0, law / np.where(p > 0, p, 1.0), 0.0)


def top_fraction_limit(p, r, k):
    """The population limit of pooled top-1/k selection, by walking down the sorted levels."""
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    h = np.zeros(len(p))
    budget = 1.0 / k
    for level in sorted(set(r[p > 0]), reverse=True):
        on = (r == level) & (p > 0)
        mass = p[on].sum()
        take = min(mass, budget)
        h[on] = k * take / mass
        budget -= take
        if budget <= 0:
            break
    return h



def top_fraction_counts(rng, p, r, k, n, reps):
    """Simulated pooled top-1/k selection: ``(reps, M)`` counts of the states kept when the best
    ``n`` of ``n*k`` iid draws from ``p`` are kept (by reward ``r``, ties broken uniformly), each
    replicate independent: the finite-``n`` law that the population limit only approximates.

    By counts, not by sorting: the candidate counts per state are multinomial(n*k, p); walking
    down the reward levels, a level is kept whole while it fits, and at the level where the budget
    runs out a uniformly random subset of its candidates is kept, i.e. a multivariate
    hypergeometric draw over its states.
    """
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    candidates = rng.multinomial(n * k, p, size=reps)
    kept = np.zeros_like(candidates)
    for i in range(reps):
        budget = n
        for level in sorted(set(r), reverse=True):
            on = np.flatnonzero(r == level)
            here = candidates[i, on]
            if here.sum() <= budget:
                kept[i, on] = here
                budget -= here.sum()
            else:
                kept[i, on] = rng.multivariate_hypergeometric(here, budget)
                budget = 0
            if budget == 0:
                break
    return kept
