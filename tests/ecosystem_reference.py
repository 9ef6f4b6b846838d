"""Slow, obviously-correct NumPy references (float64) of ecosystem maps and drifting preferences.

Curated laws come from the enumeration references: ``tests/reference.py`` (Luce with ``beta``)
and ``tests/curator_reference.py`` (any curator spec). Everything is a plain loop over models,
states and generations.
"""

import numpy as np

from tests import curator_reference, reference


def curated(p, r, k, beta=1.0, spec=None):
    """The kept law p H / sum(p H) of one model on the reward ``r`` (S,), by enumeration."""
    p = np.asarray(p, np.float64)
    r = np.asarray(r, np.float64)
    if spec is None:
        h = reference.curation_factor(p, r, k, beta)
    else:
        h = curator_reference.factor(spec, p, r, k)
    q = np.where(p > 0, p * h, 0.0)
    return q / q.sum()


def ecosystem_map(ps, rewards, interaction, k, *, betas=None, specs=None, p_data=None,
                  real_fractions=None, columns=None):
    """p'_i = a_i p_data + (1 - a_i) sum_j W_ij q_j, q_j model j's curated law (then renormalised).

    Args:
        ps: (M, S). rewards: (S,) or (S, R) with ``columns`` (model i reads column columns[i]).
        interaction: (M, M) row-stochastic W. k: candidates.
        betas: M Luce inverse temperatures (default 1), or ``specs``: M curator specs.
        p_data: (S,) or None. real_fractions: M rates (default 0).
    """
    ps = np.asarray(ps, np.float64)
    rewards = np.asarray(rewards, np.float64)
    w = np.asarray(interaction, np.float64)
    num_models = ps.shape[0]
    qs = []
    for j in range(num_models):
        r = rewards if rewards.ndim == 1 else rewards[:, columns[j]]
        beta = 1.0 if betas is None else betas[j]
        spec = None if specs is None else specs[j]
        qs.append(curated(ps[j], r, k, beta, spec))
    out = np.zeros_like(ps)
    for i in range(num_models):
        mixed = np.zeros(ps.shape[1])
        for j in range(num_models):
            mixed += w[i, j] * qs[j]
        if p_data is None:
            out[i] = mixed
        else:
            a = 0.0 if real_fractions is None else real_fractions[i]
            q = a * np.asarray(p_data, np.float64) + (1 - a) * mixed
            out[i] = q / q.sum()
    return out


def ecosystem_trajectory(ps0, rewards, interaction, k, num_generations, **options):
    """(T + 1, M, S): :func:`ecosystem_map` iterated, row 0 = ps0."""
    out = [np.asarray(ps0, np.float64)]
    for _ in range(num_generations):
        out.append(ecosystem_map(out[-1], rewards, interaction, k, **options))
    return np.stack(out)


def drift(p0, features, weights0, eta, num_generations, k, *, beta=1.0, spec=None, p_data=None,
          real_fraction=0.0):
    """(ps (T+1, S), ws (T+1, F)): r_t = features @ w_t, p_{t+1} = a p_data + (1-a) curated(p_t,
    r_t), w_{t+1} = (1 - eta) w_t + eta features^T p_{t+1}."""
    features = np.asarray(features, np.float64)
    ps = [np.asarray(p0, np.float64)]
    ws = [np.asarray(weights0, np.float64)]
    for _ in range(num_generations):
        r = features @ ws[-1]
        q = curated(ps[-1], r, k, beta, spec)
        if p_data is not None:
            q = real_fraction * np.asarray(p_data, np.float64) + (1 - real_fraction) * q
            q = q / q.sum()
        ps.append(q)
        ws.append((1 - eta) * ws[-1] + eta * features.T @ q)
    return np.stack(ps), np.stack(ws)
