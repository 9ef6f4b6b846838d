"""Slow, obviously-correct NumPy/SciPy references for the model families (float64, loops)."""

import numpy as np
from scipy import stats
from scipy.special import logsumexp


def weighted_frequencies(states, weights, num_states):
    """p_j = sum_n w_n [x_n = j] / sum_n w_n, by an explicit loop over the data."""
    p = np.zeros(num_states)
    for x, w in zip(np.asarray(states), np.asarray(weights, np.float64)):
        p[x] += w
    return p / p.sum()


def data_scale(x, weights):
    """The scale s0 recorded by init: the weighted mean variance of the data; for data without
    spread the mean squared coordinate of the weighted mean; if that is 0 too, 1."""
    x = np.asarray(x, np.float64)
    w = np.asarray(weights, np.float64)
    mean = np.average(x, axis=0, weights=w)
    var = np.trace(np.atleast_2d(np.cov(x.T, aweights=w, bias=True))) / x.shape[1]
    if var > 0:
        return var
    msq = float(mean @ mean) / x.shape[1]
    return msq if msq > 0 else 1.0


def covariance_floor(pooled_cov, min_variance, eps, scale):
    """100 * eps * trace(cov) / d + min_variance * scale (the floor of selfconsume.models)."""
    pooled_cov = np.atleast_2d(pooled_cov)
    return 100.0 * eps * np.trace(pooled_cov) / pooled_cov.shape[0] + min_variance * scale


def weighted_gaussian_mle(x, weights, min_variance, eps, scale=None):
    """Weighted mean and biased covariance (np.cov with aweights), plus the floor; ``scale``
    defaults to the data scale of ``x`` (as ``init``)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(weights, np.float64)
    mean = np.average(x, axis=0, weights=w)
    cov = np.atleast_2d(np.cov(x.T, aweights=w, bias=True))
    scale = data_scale(x, w) if scale is None else scale
    floor = covariance_floor(cov, min_variance, eps, scale)
    return mean, cov + floor * np.eye(x.shape[1])


def gaussian_logpdf(x, mean, cov):
    return stats.multivariate_normal(mean, cov).logpdf(np.asarray(x, np.float64))


def gmm_joint_log_probs(x, weights, means, covs):
    """(n, C) log pi_c + log N(x_n | mu_c, Sigma_c), one component at a time with SciPy."""
    x = np.asarray(x, np.float64)
    out = np.empty((x.shape[0], len(weights)))
    for c in range(len(weights)):
        out[:, c] = np.log(weights[c]) + stats.multivariate_normal(means[c], covs[c]).logpdf(x)
    return out


def gmm_log_prob(x, weights, means, covs):
    return logsumexp(gmm_joint_log_probs(x, weights, means, covs), axis=1)


def gmm_em_step(x, sample_weights, weights, means, covs, min_variance, eps, scale=1.0):
    """One weighted EM step with explicit per-component loops (no component may be empty);
    ``scale`` is the params' data_scale (1.0 for params built by hand)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(sample_weights, np.float64)
    w = w / w.sum()
    n, d = x.shape
    joint = gmm_joint_log_probs(x, weights, means, covs)
    resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    pooled = np.atleast_2d(np.cov(x.T, aweights=w, bias=True))
    floor = covariance_floor(pooled, min_variance, eps, scale)
    new_weights, new_means, new_covs = [], [], []
    for c in range(len(weights)):
        r = w * resp[:, c]
        mass = r.sum()
        mu = (r[:, None] * x).sum(axis=0) / mass
        cov = np.zeros((d, d))
        for i in range(n):
            diff = x[i] - mu
            cov += r[i] * np.outer(diff, diff)
        new_weights.append(mass)
        new_means.append(mu)
        new_covs.append(cov / mass + floor * np.eye(d))
    new_weights = np.array(new_weights)
    return new_weights / new_weights.sum(), np.array(new_means), np.array(new_covs)


def ring(num_points, *, num_modes=8, radius=1.0, std=0.05, seed=0):
    """num_modes isotropic Gaussians of standard deviation std evenly spaced on a circle."""
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, num_modes, num_points) * 2 * np.pi / num_modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + std * rng.standard_normal((num_points, 2))


def kde_log_prob(y, points, weights, cov):
    """log sum_n w_n N(y | x_n, cov), one training point at a time with SciPy (float64)."""
    y = np.asarray(y, np.float64)
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    terms = [np.log(wn) + stats.multivariate_normal(xn, cov).logpdf(y)
             for xn, wn in zip(np.asarray(points, np.float64), w) if wn > 0]
    return logsumexp(np.stack(terms, axis=-1), axis=-1)


def collapse_variances(kept):
    """Per generation, the float64 covariance (no floor) of the kept samples ``(T, n, d)``: the
    Gaussian MLE of a loop that refits on its kept samples, given the same samples."""
    kept = np.asarray(kept, np.float64)
    out = []
    for x in kept:
        mean = x.mean(axis=0)
        out.append(sum(np.outer(xi - mean, xi - mean) for xi in x) / len(x))
    return np.array(out)
