"""The files of a run folder, and its figures drawn from them alone.

A run folder holds

* ``config.toml``: the resolved configuration (:func:`selfconsume.study.config.to_toml`);
* ``results.npz`` + ``results.json``: the :class:`selfconsume.SweepResult` (values with leading
  axes ``(seed, *grid axes, generation)``), whose metadata also holds what the figures need
  (mode centres, class names, image shape, the exact grid), so :func:`figures` never rebuilds
  the data nor retrains a classifier;
* ``metrics.csv``: every per-generation metric in long form (``seed, <grid axes>, generation,
  metric, index, value``; vector metrics one row per ``index``);
* ``summary.json``: the final generation per grid point and the claims;
* ``figures/*.png``; and, while it runs, ``checkpoint.npz``.

Every file is written atomically (:func:`selfconsume.files.atomic_write`).
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from selfconsume.files import atomic_write
from selfconsume.results import SweepResult
from selfconsume.study.build import CLASSIFIER_REWARDS, reward_function
from selfconsume.study.claims import summarize
from selfconsume.study.config import ConfigError

__all__ = ["write_outputs", "figures", "RESULTS", "SUMMARY"]

RESULTS = "results"
SUMMARY = "summary.json"


def write_outputs(result: SweepResult, cfg: dict, run_dir: str) -> dict:
    """Writes results, CSV, summary and figures; returns the summary."""
    result.save(run_dir, name=RESULTS)  # results.npz + results.json
    scalar = SweepResult(values={k: v for k, v in result.values.items() if k != "samples"},
                         axes=result.axes, coords=result.coords, metadata=result.metadata)
    scalar.to_csv(os.path.join(run_dir, "metrics.csv"))
    summary = summarize(result, cfg["claims"])
    summary["figures"] = figures(result, cfg, run_dir)
    atomic_write(os.path.join(run_dir, SUMMARY),
                 lambda f: json.dump(summary, f, indent=2, default=float), binary=False)
    return summary


def figures(result: SweepResult, cfg: dict, run_dir: str, *,
            metrics: list[str] | None = None) -> list[str]:
    """Draws the figures of a run from its results and configuration; returns their paths.

    Args:
        result: the run's results.
        cfg: its configuration.
        run_dir: the run folder (figures go to ``run_dir/figures``).
        metrics: the per-generation metrics to draw (default ``plots.metrics``).

    Raises:
        ConfigError: if a requested metric is not in the results.
    """
    from selfconsume import plotting

    folder = os.path.join(run_dir, "figures")
    metrics = list(cfg["plots"]["metrics"] if metrics is None else metrics)
    missing = [m for m in metrics if m not in result.values or m == "samples"]
    if missing:
        available = sorted(k for k in result.values if k != "samples")
        raise ConfigError(f"`--metrics`: {missing[0]!r} is not a metric of this run; "
                          f"available: {', '.join(available)}")
    written = []
    title = cfg["name"]
    for metric in metrics:
        path = os.path.join(folder, f"{metric}.png")
        reference = ("exact_reward" if metric == "reward_mean" and "exact_reward" in
                     result.values else None)
        if result.values[metric].ndim != len(result.axes) + 1:  # vector metrics: no line plot
            continue
        plotting.metric_vs_generation(result, metric, path=path, title=title,
                                      reference=reference)
        written.append(path)
    if len(result.axes) == 3 and metrics:
        first = next((m for m in metrics if result.values[m].ndim == 4), None)
        if first is not None:
            path = os.path.join(folder, f"{first}_heatmap.png")
            plotting.heatmap(result, first, path=path, title=title)
            written.append(path)
    meta = result.metadata
    if "class_shares" in result.values:
        path = os.path.join(folder, "class_proportions.png")
        plotting.class_proportions(result, path=path, title=title,
                                   class_names=meta.get("class_names"))
        written.append(path)
    num_gens = next(iter(result.values.values())).shape[len(result.axes)]
    gens = [g for g in cfg["plots"]["snapshots"] if 0 <= g < num_gens]
    samples = result.values.get("samples")
    grid_axes = result.axes[1:]
    labels = [", ".join(f"{a}={result.coords[a][i].item():g}" for a, i in zip(grid_axes, idx))
              for idx in np.ndindex(*[len(result.coords[a]) for a in grid_axes])] or [""]
    if gens and samples is not None and meta.get("image_shape") is not None:
        rows = samples[0].reshape((-1,) + samples.shape[-3:])  # seed 0: (points, T + 1, n, d)
        path = os.path.join(folder, "samples.png")
        plotting.image_samples(rows[:, gens], gens, tuple(meta["image_shape"]),
                               row_labels=labels, path=path, title=title)
        written.append(path)
    elif gens and samples is not None and samples.shape[-1] == 2:
        rows = samples[0].reshape((-1,) + samples.shape[-3:])  # seed 0: (points, T + 1, n, 2)
        centers = None if meta.get("centers") is None else np.asarray(meta["centers"])
        reward_fn = None
        if cfg["reward"]["name"] not in CLASSIFIER_REWARDS:
            base = reward_function(cfg, centers)
            scale = float(cfg["reward"]["options"].get("scale", 1.0))
            reward_fn = lambda x: scale * np.asarray(base(jnp.asarray(x, jnp.float32)))  # noqa
        path = os.path.join(folder, "snapshots.png")
        plotting.snapshots(rows[:, gens], gens, reward_fn=reward_fn, centers=centers,
                           path=path, title=title, row_labels=labels)
        written.append(path)
    return written
