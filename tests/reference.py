"""Slow, obviously-correct NumPy references for the numerical kernels (float64)."""

import itertools
import math

import numpy as np


def choice_probabilities(rewards, beta):
    """softmax(beta * r) over the last axis; beta = inf shares the mass equally among the maxima."""
    r = np.asarray(rewards, np.float64)
    if math.isinf(beta):
        top = r == r.max(axis=-1, keepdims=True)
        return top / top.sum(axis=-1, keepdims=True)
    z = np.exp(beta * (r - r.max(axis=-1, keepdims=True)))
    return z / z.sum(axis=-1, keepdims=True)


def curation_factor(p, rewards, k, beta):
    """H(x) = K E[P(x kept | x and K-1 iid draws from p)], by enumerating every (K-1)-tuple."""
    p = np.asarray(p, np.float64)
    r = np.asarray(rewards, np.float64)
    m = len(p)
    if math.isinf(k):  # exponential tilt e^{br} / E_p[e^{br}]; beta = inf keeps the top level
        top = r[p > 0].max()
        w = (r == top).astype(float) if math.isinf(beta) else np.exp(beta * (r - top))
        return w / np.sum(p * w)
    others = np.array(list(itertools.product(range(m), repeat=k - 1)), dtype=int).reshape(-1, k - 1)
    prob = np.prod(p[others], axis=1)  # probability of each ordered tuple of the other draws
    h = np.zeros(m)
    for x in range(m):
        group = np.concatenate([np.full((len(others), 1), r[x]), r[others]], axis=1)
        h[x] = np.sum(prob * choice_probabilities(group, beta)[:, 0])
    return k * h


def retrain_map(p, rewards, k, beta, p_data=None, real_fraction=0.0):
    q = np.asarray(p) * curation_factor(p, rewards, k, beta)
    q = q / q.sum()
    if p_data is not None:
        q = real_fraction * np.asarray(p_data) + (1 - real_fraction) * q
    return q / q.sum()
