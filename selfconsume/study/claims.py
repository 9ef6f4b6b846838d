"""Claims: statements about a study's results, checked on the saved values.

A claim selects ``metric`` at the grid values of ``where`` (the other grid axes are kept), giving
per-seed series ``v[s, ..., t]`` over generations ``t = 0..T``, then tests

* ``increases`` / ``decreases``: ``v[..., T] > v[..., 0]`` (resp. ``<``);
* ``above`` / ``below``: ``v[..., generation] > value`` (resp. ``<``);
* ``matches``: ``|mean_s v - mean_s ref| <= value * se`` at every generation, with ``ref`` the
  ``reference`` metric and ``se = sd_s(v) / sqrt(S)``;

for every seed (``over = "every_seed"``) or for the seed mean (``over = "mean"``).
:func:`summarize` adds the final generation's mean and 95% interval over seeds per grid point
(:func:`selfconsume.stats.mean_and_interval`).
"""

from __future__ import annotations

import numpy as np

from selfconsume.results import SweepResult
from selfconsume.stats import mean_and_interval
from selfconsume.study.config import ConfigError

__all__ = ["evaluate_claims", "summarize"]


def _select(result: SweepResult, metric: str, where: dict) -> np.ndarray:
    """``values[metric]`` at the grid values in ``where``: shape ``(seeds, rest..., T + 1, ...)``."""
    if metric not in result.values:
        raise ConfigError(f"claim metric {metric!r} is not recorded; available: "
                          f"{', '.join(sorted(result.values))}")
    values = result.values[metric]
    for axis in reversed(result.axes[1:]):
        i = result.axes.index(axis)
        if axis in where:
            hits = np.flatnonzero(np.isclose(result.coords[axis], where[axis]))
            if hits.size == 0:
                raise ConfigError(f"claim: {axis} = {where[axis]} is not a grid value; grid: "
                                  f"{result.coords[axis].tolist()}")
            values = np.take(values, hits[0], axis=i)
    return values


def evaluate_claims(result: SweepResult, claims: list[dict]) -> list[dict]:
    """Evaluates each claim: its per-seed (or mean) value and whether it holds."""
    out = []
    for claim in claims:
        v = _select(result, claim["metric"], claim["where"])  # (seeds, [other grid], T + 1)
        v = v.reshape(v.shape[0], -1, v.shape[-1]) if v.ndim >= 2 else v[:, None, None]
        if claim["over"] == "mean":
            v = v.mean(axis=0, keepdims=True)
        test, value, gen = claim["test"], claim["value"], claim["generation"]
        if test == "matches":  # |seed mean - reference| <= value standard errors, every generation
            ref = _select(result, claim["reference"], claim["where"])
            ref = ref.reshape(ref.shape[0], -1, ref.shape[-1]).mean(axis=0)
            v = _select(result, claim["metric"], claim["where"])
            v = v.reshape(v.shape[0], -1, v.shape[-1])
            se = v.std(axis=0, ddof=1) / np.sqrt(v.shape[0]) if v.shape[0] > 1 else np.inf
            z = np.abs(v.mean(axis=0) - ref) / np.maximum(se, 1e-12)
            out.append(dict(claim, holds=bool(np.all(z <= value)),
                            observed=z.max(axis=-1).tolist()))
            continue
        if test == "increases":
            ok, stat = v[..., -1] > v[..., 0], v[..., -1] - v[..., 0]
        elif test == "decreases":
            ok, stat = v[..., -1] < v[..., 0], v[..., -1] - v[..., 0]
        elif test == "above":
            ok, stat = v[..., gen] > value, v[..., gen]
        else:
            ok, stat = v[..., gen] < value, v[..., gen]
        out.append(dict(claim, holds=bool(np.all(ok)), observed=stat.reshape(-1).tolist()))
    return out


def summarize(result: SweepResult, claims: list[dict]) -> dict:
    """Final-generation metrics per grid point (mean and 95% interval over seeds) and claims."""
    rows = []
    grid_axes = result.axes[1:]
    shape = tuple(len(result.coords[a]) for a in grid_axes)
    for index in np.ndindex(*shape):
        point = {a: result.coords[a][i].item() for a, i in zip(grid_axes, index)}
        final = {}
        for name, v in result.values.items():
            v = v[(slice(None),) + index]
            if v.ndim != 2:  # scalar-per-generation metrics only
                continue
            mean, low, high = mean_and_interval(v[:, -1].astype(np.float64))
            final[name] = {"mean": float(mean), "low": float(low), "high": float(high)}
        rows.append({"point": point, "final": final})
    return {"grid": rows, "claims": evaluate_claims(result, claims)}
