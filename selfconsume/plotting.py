r"""Matplotlib figures from sweep results (object API on the Agg canvas, no pyplot).

Every function builds its own :class:`matplotlib.figure.Figure` attached to a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so nothing here touches pyplot's global
state: the functions work headless, may run in several threads at once (one figure per call), and
importing this module leaves ``matplotlib.get_backend()`` unchanged. Each function returns the
figure; with ``path`` it also writes a PNG (dpi 120) atomically: to a temporary file in the same
folder, then ``os.replace``, creating the folder if needed.

**Inputs.** The figures read a :class:`~selfconsume.results.SweepResult` whose leading axes are
``("seed", *grid names)``. A metric is a key of ``result.values`` (nested dict keys joined with
``"/"``); per-generation metrics have shape ``(S, *grid sizes, T + 1)``, generation 0 being the
initial model.

**Seed averages and confidence bands.** For :math:`S` seeds :math:`y_1, \dots, y_S` (any NaN gives
NaN; nothing is dropped silently),

.. math::
    \bar y = \frac1S \sum_s y_s,\qquad
    s^2 = \frac{1}{S-1} \sum_s (y_s - \bar y)^2,\qquad
    \bar y \pm t_{(1+\ell)/2,\, S-1}\, \frac{s}{\sqrt S},

the level-:math:`\ell` Student-t confidence interval of the mean (:func:`selfconsume.stats.mean_and_interval`). The
t quantile comes from ``scipy.stats.t.ppf`` when SciPy is installed; otherwise from the exact
closed form of the t distribution function for integer degrees of freedom :math:`\nu`
(Abramowitz & Stegun 26.7.3-4, with :math:`\theta = \arctan(t / \sqrt\nu)`,
:math:`c = \cos\theta`),

.. math::
    P(|T| \le t) = \begin{cases}
      \sin\theta \sum_{j=0}^{\nu/2 - 1} \frac{(2j-1)!!}{(2j)!!} c^{2j}, & \nu \text{ even},\\
      \frac2\pi\Big[\theta + \sin\theta \sum_{j=0}^{(\nu-3)/2}
        \frac{(2j)!!}{(2j+1)!!} c^{2j+1}\Big], & \nu \text{ odd},
    \end{cases}

inverted by bisection in :math:`\theta` (to machine precision), and for :math:`\nu > 1000` from the
Cornish-Fisher expansion :math:`t \approx z + g_1(z)/\nu + g_2(z)/\nu^2 + g_3(z)/\nu^3` around the
normal quantile :math:`z` (relative error below :math:`10^{-10}` there, for levels up to
0.9999). With one seed there is no interval (low = high = mean) and no band is drawn.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from selfconsume import stats
from selfconsume.files import atomic_write
from selfconsume.results import SweepResult, named_leaves
from selfconsume.stats import mean_and_interval

__all__ = [
    "class_proportions",
    "heatmap",
    "mean_and_interval",
    "metric_vs_generation",
    "snapshots",
]

DPI = 120
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
_MAX_INLINE_LEGEND = 8      # more entries go to a legend outside the axes
_MAX_ANNOTATED_CELLS = 400  # heat maps with more cells are not annotated
_SNAPSHOT_BINS = 60
_REWARD_GRID = 121


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def metric_vs_generation(result: SweepResult, metric: str, *, path: str | os.PathLike | None = None,
                         title: str = "", ylabel: str | None = None,
                         level: float = 0.95, reference: str | None = None) -> Figure:
    """Seed mean of a per-generation metric against generation, with confidence bands.

    One line per grid point (one per combination for several grid axes, a single line without
    grid axes), labelled ``"name=value"``. With one grid axis the colours follow its order
    (viridis); with two, the colour follows the first axis and the line style the second. The
    band is the ``level`` Student-t interval of the mean over seeds (:func:`selfconsume.stats.mean_and_interval`);
    with one seed no band is drawn. With ``reference``, that metric's seed mean is drawn as a thin
    black dashed line per grid point (e.g. the exact population curve ``exact_reward`` over the
    sample-based ``reward_mean``).

    Args:
        result: a sweep with axes ``("seed", *grid names)``.
        metric: key of ``result.values`` holding an array of shape ``(S, *grid sizes, T + 1)``.
        path: optional ``.png`` file to write (parent folders are created).
        title: the figure title (the study); defaults to the metric name.
        ylabel: the y-axis label (include units); defaults to the metric name.
        level: confidence level of the bands, in ``(0, 1)``.
        reference: optional key of ``result.values`` shaped like ``metric`` (e.g. the exact
            population curve), drawn dashed in the colour of each configuration.

    Returns:
        The :class:`~matplotlib.figure.Figure` (one axes).

    Raises:
        ValueError: if ``result`` is not a seed-leading :class:`SweepResult`, ``metric`` (or
            ``reference``) is not one of its metrics or has the wrong shape, ``level`` is not in
            ``(0, 1)``, or ``path`` does not end in ``.png``.
    """
    _check_result(result)
    values = _metric(result, metric, trailing=1, trailing_name="T + 1")
    ref = None
    if reference is not None:
        ref = np.mean(_metric(result, reference, trailing=1, trailing_name="T + 1",
                              argument="reference"), axis=0)
    level = stats.check_level(level)
    title, ylabel = _text("title", title), _text("ylabel", ylabel, optional=True)
    _check_path(path)
    num_seeds, num_gens = values.shape[0], values.shape[-1]
    mean, low, high = mean_and_interval(values, axis=0, level=level)  # (*grid, T + 1)
    gens = np.arange(num_gens)
    points = _grid_points(result)
    styles = _line_styles(result)

    many = len(points) > _MAX_INLINE_LEGEND
    fig = _figure((9.0 if many else 7.0, 4.2))
    ax = fig.add_subplot()
    marker_every = num_gens <= 30
    band_alpha = 0.18 if len(points) <= 4 else 0.08
    for (index, label), style in zip(points, styles):
        line, = ax.plot(gens, mean[index], label=label or metric, linewidth=1.6,
                        marker=style["marker"] if marker_every else None, markersize=3.5,
                        color=style["color"], linestyle=style["linestyle"])
        if num_seeds > 1:
            ax.fill_between(gens, low[index], high[index], color=line.get_color(), alpha=band_alpha,
                            linewidth=0)
        if ref is not None:
            ax.plot(gens, ref[index], color=line.get_color(), linewidth=1.1, linestyle="--",
                    alpha=0.9, label=reference if index == points[0][0] else None)
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel if ylabel is not None else metric)
    ax.set_title(title or metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if num_gens > 1:
        ax.set_xlim(0, num_gens - 1)
    legend_title = (f"mean ± {_pct(level)} CI, {num_seeds} seeds" if num_seeds > 1
                    else "1 seed (no band)")
    _legend(fig, ax, legend_title)
    return _finish(fig, path)


def heatmap(result: SweepResult, metric: str, *, generation: int = -1,
            path: str | os.PathLike | None = None, title: str = "") -> Figure:
    """Seed mean of a metric over a two-axis grid, as an annotated heat map.

    Rows follow the first grid axis (bottom to top), columns the second; tick labels are the
    grid values, the colour bar is labelled with the metric name and each cell shows its value
    (up to 400 cells; NaN cells are blank and marked "nan").

    Args:
        result: a sweep with axes ``("seed", a, b)``: exactly two grid axes.
        metric: key of ``result.values`` with shape ``(S, n_a, n_b, T + 1)`` (per generation)
            or ``(S, n_a, n_b)`` (one number per run; ``generation`` is then ignored).
        generation: which generation to show, an integer index into ``0..T`` (negative counts
            from the end; ``-1`` is the last generation).
        path: optional ``.png`` file to write (parent folders are created).
        title: the figure title (the study).

    Returns:
        The :class:`~matplotlib.figure.Figure` (the heat map axes and its colour bar).

    Raises:
        ValueError: if ``result`` is not a seed-leading :class:`SweepResult` with exactly two
            grid axes, ``metric`` is unknown or has the wrong shape, ``generation`` is out of
            range, or ``path`` does not end in ``.png``.
    """
    _check_result(result)
    if len(result.axes) != 3:
        raise ValueError(f"`result` must have exactly two grid axes for a heat map; got grid "
                         f"axes {result.axes[1:]} (axes {result.axes}). Select one value along "
                         "extra axes with result.sel(...).")
    values = _metric(result, metric, trailing=(0, 1), trailing_name="T + 1")
    title = _text("title", title)
    _check_path(path)
    num_seeds = values.shape[0]
    subtitle = f"{metric}, mean of {num_seeds} seed{'s' if num_seeds > 1 else ''}"
    if values.ndim == 4:
        num_gens = values.shape[-1]
        if (isinstance(generation, bool) or not isinstance(generation, numbers.Integral)
                or not -num_gens <= generation < num_gens):
            raise ValueError(f"`generation` must be an integer in [{-num_gens}, {num_gens - 1}] "
                             f"(metric {metric!r} has {num_gens} generations); got "
                             f"{generation!r}.")
        gen = int(generation) % num_gens
        values = values[..., gen]
        subtitle = f"{metric} at generation {gen}, mean of {num_seeds} seed" + (
            "s" if num_seeds > 1 else "")
    with np.errstate(invalid="ignore", over="ignore"):
        grid = np.mean(values, axis=0)                              # (n_a, n_b)
    name_a, name_b = result.axes[1], result.axes[2]
    n_a, n_b = grid.shape

    fig = _figure((max(4.8, 2.2 + 0.9 * n_b), max(3.6, 1.9 + 0.55 * n_a)))
    ax = fig.add_subplot()
    finite = grid[np.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = Normalize(vmin=vmin, vmax=vmax)
    cmap = colormaps["viridis"]
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap,
                      norm=norm, interpolation="nearest")
    ax.set_xticks(np.arange(n_b), labels=[_fmt(v) for v in result.coords[name_b]])
    ax.set_yticks(np.arange(n_a), labels=[_fmt(v) for v in result.coords[name_a]])
    ax.set_xlabel(name_b)
    ax.set_ylabel(name_a)
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle)
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label(metric)
    if n_a * n_b <= _MAX_ANNOTATED_CELLS:
        fontsize = 9 if n_a * n_b <= 64 else 7
        for i in range(n_a):
            for j in range(n_b):
                v = grid[i, j]
                if np.isfinite(v):
                    r, g, b, _ = cmap(norm(v))
                    light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
                    color = "black" if light else "white"
                else:
                    color = "0.3"
                ax.text(j, i, _fmt_value(v), ha="center", va="center", color=color,
                        fontsize=fontsize)
    return _finish(fig, path)


def snapshots(samples, generations, *, reward_fn: Callable[[np.ndarray], Any] | None = None,
              centers=None, extent=None, path: str | os.PathLike | None = None, title: str = "",
              row_labels: Sequence[str] | None = None) -> Figure:
    """A grid of 2-D sample densities: rows (e.g. real-data fractions) x snapshot generations.

    Each panel is a 2-D histogram of its points (60 x 60 bins over ``extent``, log colour scale
    shared by all panels, empty bins blank, one colour bar "samples per bin"); points outside
    ``extent`` or non-finite are not drawn and their count is printed in the panel. All panels
    share ``extent``. Optional overlays: the mode ``centers`` as red crosses and the level sets
    of ``reward_fn`` (evaluated once on a 121 x 121 grid over ``extent``) as thin contour lines.

    Args:
        samples: array of shape ``(R, G, n, 2)``: ``R`` rows, ``G`` snapshots, ``n >= 1`` points.
        generations: the ``G`` generation numbers, shown as "generation t" column titles.
        reward_fn: optional ``r(x)`` mapping a NumPy array ``(m, 2)`` to rewards ``(m,)``.
        centers: optional mode centres, shape ``(C, 2)``.
        extent: optional ``(xmin, xmax, ymin, ymax)`` with ``xmin < xmax`` and ``ymin < ymax``;
            default: the range of the finite points (and centres), padded by 5% on each side.
        path: optional ``.png`` file to write (parent folders are created).
        title: the figure title (the study).
        row_labels: optional ``R`` strings shown on the left of each row.

    Returns:
        The :class:`~matplotlib.figure.Figure` (``R * G`` panels, row-major, then the colour bar).

    Raises:
        ValueError: if ``samples`` does not have shape ``(R, G, n, 2)`` with ``R, G, n >= 1``,
            ``generations`` does not hold ``G`` numbers, ``row_labels`` does not hold ``R``
            strings, ``centers`` is not ``(C, 2)``, ``extent`` is invalid, ``reward_fn`` is not
            callable or does not return ``m`` rewards, or ``path`` does not end in ``.png``.
    """
    x = _numeric("samples", samples)
    if x.ndim != 4 or x.shape[-1] != 2 or 0 in x.shape:
        raise ValueError(f"`samples` must have shape (R, G, n, 2) with R, G, n >= 1 (rows, "
                         f"snapshot generations, points in 2-D); got shape {x.shape}.")
    num_rows, num_cols, num_points, _ = x.shape
    gens = _numeric("generations", generations)
    if gens.shape != (num_cols,):
        raise ValueError(f"`generations` must hold one number per snapshot, shape "
                         f"({num_cols},) for `samples` of shape {x.shape}; got shape "
                         f"{gens.shape}.")
    if row_labels is not None:
        if isinstance(row_labels, str) or len(row_labels) != num_rows:
            raise ValueError(f"`row_labels` must be a sequence of {num_rows} strings (one per "
                             f"row of `samples`); got {row_labels!r}.")
        row_labels = [str(r) for r in row_labels]
    if centers is not None:
        centers = _numeric("centers", centers)
        if centers.ndim != 2 or centers.shape[1] != 2:
            raise ValueError(f"`centers` must have shape (C, 2); got shape {centers.shape}.")
    if reward_fn is not None and not callable(reward_fn):
        raise ValueError(f"`reward_fn` must be callable as r(x) with x of shape (m, 2); got "
                         f"{reward_fn!r}.")
    title = _text("title", title)
    _check_path(path)
    if extent is None:
        extent = _default_extent(x, centers)
    else:
        extent = _check_extent(extent)
    x0, x1, y0, y1 = extent

    counts, outside = [], []
    for r in range(num_rows):
        for g in range(num_cols):
            pts = x[r, g]
            inside = (np.isfinite(pts).all(axis=1) & (pts[:, 0] >= x0) & (pts[:, 0] <= x1)
                      & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))
            h, _, _ = np.histogram2d(pts[inside, 0], pts[inside, 1], bins=_SNAPSHOT_BINS,
                                     range=[[x0, x1], [y0, y1]])
            counts.append(h)
            outside.append(int(num_points - inside.sum()))
    norm = LogNorm(vmin=1.0, vmax=max(2.0, max(float(h.max()) for h in counts)))

    levels = grid_x = grid_y = reward = None
    if reward_fn is not None:
        grid_x, grid_y = np.meshgrid(np.linspace(x0, x1, _REWARD_GRID),
                                     np.linspace(y0, y1, _REWARD_GRID))
        query = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        reward = np.asarray(reward_fn(query), dtype=np.float64)
        if reward.shape != (query.shape[0],):
            raise ValueError(f"`reward_fn` must map x of shape (m, 2) to rewards of shape (m,); "
                             f"got shape {reward.shape} for m = {query.shape[0]}.")
        reward = np.ma.masked_invalid(reward.reshape(grid_x.shape))
        if reward.count() and reward.min() < reward.max():
            levels = MaxNLocator(nbins=7).tick_values(float(reward.min()), float(reward.max()))
            levels = levels[(levels > reward.min()) & (levels < reward.max())]
            if levels.size == 0:
                levels = None

    fig = _figure((2.5 * num_cols + 1.4, 2.3 * num_rows + 0.9))
    axes = fig.subplots(num_rows, num_cols, sharex=True, sharey=True, squeeze=False)
    cmap = colormaps["viridis"]
    image = None
    for r in range(num_rows):
        for g in range(num_cols):
            ax = axes[r, g]
            h = counts[r * num_cols + g]
            image = ax.imshow(np.ma.masked_less(h.T, 1), origin="lower", extent=extent,
                              aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            if levels is not None:
                contour = ax.contour(grid_x, grid_y, reward, levels=levels, colors="tab:orange",
                                     linewidths=0.8, linestyles="solid", alpha=0.9)
                if r == 0 and g == 0:
                    ax.clabel(contour, fontsize=6, fmt="%.3g")
            if centers is not None:
                ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="red", s=22,
                           linewidths=1.0, zorder=3)
            if outside[r * num_cols + g]:
                ax.text(0.98, 0.02, f"{outside[r * num_cols + g]} outside", ha="right",
                        va="bottom", fontsize=6, color="0.3", transform=ax.transAxes)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(f"generation {_fmt(gens[g])}", fontsize=10)
            if g == 0:
                label = row_labels[r] if row_labels is not None else ""
                ax.set_ylabel(f"{label}\n$x_2$" if label else "$x_2$", fontsize=9)
            if r == num_rows - 1:
                ax.set_xlabel("$x_1$", fontsize=9)
    colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                            aspect=12 + 8 * num_rows)
    colorbar.set_label("samples per bin (log scale)")
    handles = []
    if centers is not None:
        handles.append(Line2D([], [], marker="x", color="red", linestyle="none",
                              label="mode centres"))
    if levels is not None:
        handles.append(Line2D([], [], color="tab:orange", linewidth=0.8,
                              label="reward level sets"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                   fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def image_samples(samples, generations, image_shape: Sequence[int], *,
                  row_labels: Sequence[str] | None = None, num_images: int = 16,
                  path: str | os.PathLike | None = None, title: str = "") -> Figure:
    """A grid of sample images: rows (e.g. real-data fractions) x snapshot generations.

    Each panel tiles the first ``num_images`` samples of its row and generation into a square-ish
    mosaic; values are clipped to ``[0, 1]`` (grey scale for 2-D image shapes, RGB for
    ``(H, W, 3)``).

    Args:
        samples: array of shape ``(R, G, n, prod(image_shape))`` of flattened images.
        generations: the ``G`` generation numbers, shown as column titles.
        image_shape: ``(H, W)`` or ``(H, W, 3)``: the shape of one image (row-major flattening).
        row_labels: optional ``R`` strings shown on the left of each row.
        num_images: images per panel, ``>= 1`` (at most ``n`` are shown).
        path: optional ``.png`` file to write (parent folders are created).
        title: the figure title (the study).

    Returns:
        The :class:`~matplotlib.figure.Figure` (``R * G`` panels, row-major).

    Raises:
        ValueError: if the shapes do not fit, ``num_images < 1``, or ``path`` does not end in
            ``.png``.
    """
    x = _numeric("samples", samples)
    shape = tuple(int(v) for v in image_shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3) or min(shape) < 1:
        raise ValueError(f"`image_shape` must be (H, W) or (H, W, 3); got {tuple(image_shape)}.")
    size = int(np.prod(shape))
    if x.ndim != 4 or x.shape[-1] != size or 0 in x.shape:
        raise ValueError(f"`samples` must have shape (R, G, n, {size}) with R, G, n >= 1 for "
                         f"image_shape {shape}; got shape {x.shape}.")
    num_rows, num_cols, n, _ = x.shape
    gens = _numeric("generations", generations)
    if gens.shape != (num_cols,):
        raise ValueError(f"`generations` must hold {num_cols} numbers; got shape {gens.shape}.")
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"`row_labels` must hold {num_rows} strings; got {len(row_labels)}.")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"`num_images` must be an integer >= 1; got {num_images!r}.")
    _check_path(path)
    count = min(num_images, n)
    across = int(np.ceil(np.sqrt(count)))
    down = int(np.ceil(count / across))
    fig = _figure((1.6 * num_cols + 0.6, 1.6 * num_rows + 0.5))
    axes = fig.subplots(num_rows, num_cols, squeeze=False)
    for i in range(num_rows):
        for j in range(num_cols):
            images = np.clip(np.nan_to_num(x[i, j, :count]), 0.0, 1.0).reshape((count,) + shape)
            cell = (shape[0] + 1, shape[1] + 1) + shape[2:]  # a one-pixel background gap
            pad = np.full((across * down,) + cell, 1.0 if len(shape) == 3 else 0.0)
            pad[:count, : shape[0], : shape[1]] = images
            mosaic = pad.reshape((down, across) + cell).swapaxes(1, 2).reshape(
                (down * cell[0], across * cell[1]) + shape[2:])
            ax = axes[i, j]
            ax.imshow(mosaic, cmap="gray_r" if len(shape) == 2 else None, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"generation {_fmt(gens[j])}", fontsize=9)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def class_proportions(result: SweepResult, metric: str = "class_shares", *,
                      path: str | os.PathLike | None = None, title: str = "",
                      class_names: Sequence[str] | None = None) -> Figure:
    """Seed-mean share of each class against generation, as stacked areas, one panel per point.

    Panels: a single axes without grid axes; a row-major grid of up to 4 columns for one grid
    axis (or more than two); ``n_a`` rows by ``n_b`` columns for two grid axes. Each panel is
    titled with its grid point and stacks the classes bottom to top in order.

    Args:
        result: a sweep with axes ``("seed", *grid names)``.
        metric: key of ``result.values`` with shape ``(S, *grid sizes, T + 1, num_classes)``
            holding non-negative shares (normally summing to 1 over classes).
        path: optional ``.png`` file to write (parent folders are created).
        title: the figure title (the study).
        class_names: optional ``num_classes`` names for the legend (default ``"class c"``).

    Returns:
        The :class:`~matplotlib.figure.Figure` (one axes per grid point, row-major).

    Raises:
        ValueError: if ``result`` is not a seed-leading :class:`SweepResult`, ``metric`` is
            unknown, has the wrong shape or negative shares, ``class_names`` does not hold
            ``num_classes`` names, or ``path`` does not end in ``.png``.
    """
    _check_result(result)
    values = _metric(result, metric, trailing=2, trailing_name="T + 1, num_classes")
    if np.any(values < 0):  # NaN compares False
        raise ValueError(f"`metric` {metric!r} must hold non-negative class shares; got minimum "
                         f"{float(np.nanmin(values)):.6g}.")
    num_seeds, num_gens, num_classes = values.shape[0], values.shape[-2], values.shape[-1]
    if class_names is None:
        class_names = [f"class {c}" for c in range(num_classes)]
    elif isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(f"`class_names` must hold {num_classes} names (one per class of "
                         f"{metric!r}); got {class_names!r}.")
    class_names = [str(c) for c in class_names]
    title = _text("title", title)
    _check_path(path)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.mean(values, axis=0)                                  # (*grid, T + 1, C)
    gens = np.arange(num_gens)
    points = _grid_points(result)
    sizes = result.shape[1:]
    if len(sizes) == 2:
        num_rows, num_cols = sizes
    else:
        num_cols = min(len(points), 4)
        num_rows = -(-len(points) // num_cols)
    colors = _class_colors(num_classes)
    with np.errstate(invalid="ignore"):
        top = float(np.nanmax(mean.sum(axis=-1), initial=1.0))

    fig = _figure((2.9 * num_cols + 1.9, 2.4 * num_rows + 0.8))
    axes = fig.subplots(num_rows, num_cols, sharex=True, sharey=True, squeeze=False)
    for p, (index, label) in enumerate(points):
        ax = axes.flat[p]
        ax.stackplot(gens, mean[index].T, labels=class_names, colors=colors, linewidth=0.3,
                     edgecolor="white")
        ax.set_xlim(0, max(num_gens - 1, 1))
        ax.set_ylim(0, max(1.0, top))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        if label:
            ax.set_title(label, fontsize=9)
    for p in range(len(points), num_rows * num_cols):                 # unused slots
        axes.flat[p].set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("class share")
    for g in range(num_cols):                                          # lowest used panel
        column = [r for r in range(num_rows) if r * num_cols + g < len(points)]
        if column:
            axes[column[-1], g].set_xlabel("generation")
            axes[column[-1], g].xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="outside right upper", fontsize="small",
               title=f"mean of {num_seeds} seed{'s' if num_seeds > 1 else ''}",
               ncols=-(-num_classes // 20))
    fig.suptitle(title or metric)
    return _finish(fig, path)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _figure(size: tuple[float, float]) -> Figure:
    """A new figure on its own Agg canvas (no pyplot), with constrained layout."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_path(path) -> None:
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"`path` must be a file path ending in .png or None; got {path!r}.")
    if not os.fspath(path).lower().endswith(".png"):
        raise ValueError(f"`path` must end in .png (figures are written as PNG); got "
                         f"{os.fspath(path)!r}.")


def _finish(fig: Figure, path) -> Figure:
    """Writes ``fig`` as a PNG to ``path`` atomically (if given) and returns it."""
    if path is not None:
        path = os.path.abspath(os.fspath(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI), binary=True)
    return fig


def _check_result(result) -> None:
    if not isinstance(result, SweepResult):
        raise ValueError(f"`result` must be a selfconsume.SweepResult; got "
                         f"{type(result).__name__}.")
    if not result.axes or result.axes[0] != "seed":
        raise ValueError(f"`result` must have the seed axis first, axes ('seed', *grid names); "
                         f"got axes {result.axes} (do not select a single seed).")


def _metric(result: SweepResult, metric, *, trailing, trailing_name: str,
            argument: str = "metric") -> np.ndarray:
    """``result.values[metric]`` as a float64 array with ``trailing`` extra axes (int or tuple)."""
    available = dict(named_leaves(result.values))
    if not isinstance(metric, str) or metric not in available:
        raise ValueError(f"`{argument}` must be one of the result's metrics {sorted(available)}; "
                         f"got {metric!r}.")
    a = _numeric(argument, available[metric], label=metric)
    lead = result.shape
    allowed = (trailing,) if isinstance(trailing, int) else tuple(trailing)
    if a.shape[:len(lead)] != lead or a.ndim - len(lead) not in allowed:
        grid = ", ".join(f"{n}={s}" for n, s in zip(result.axes, lead))
        raise ValueError(f"`{argument}` {metric!r} must have shape (num_seeds, *grid sizes, "
                         f"{trailing_name}) with leading sizes ({grid}); got shape {a.shape}.")
    return a


def _numeric(name: str, value, *, label: str | None = None) -> np.ndarray:
    return stats.numeric(name, value, label=label)


def _text(name: str, value, *, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string{' or None' if optional else ''}; got "
                         f"{value!r}.")
    return value


def _fmt(value) -> str:
    """A coordinate value as short text: 0.1 -> '0.1', 2.0 -> '2', True -> 'True'."""
    v = value.item() if isinstance(value, np.generic) else value
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return f"{float(v):g}"
    return str(v)


def _fmt_value(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3g}"


def _pct(level: float) -> str:
    return f"{100 * level:.4g}%"


def _grid_points(result: SweepResult) -> list[tuple[tuple[int, ...], str]]:
    """(index into the grid axes, "a=0.1, b=2") for every grid point, in C order."""
    names = result.axes[1:]
    return [(index, ", ".join(f"{n}={_fmt(result.coords[n][i])}" for n, i in zip(names, index)))
            for index in np.ndindex(*result.shape[1:])]


def _sequential(n: int) -> list:
    if n == 1:
        return ["tab:blue"]
    cmap = colormaps["viridis"]
    return [cmap(0.88 * i / (n - 1)) for i in range(n)]  # stop before the palest yellow


def _line_styles(result: SweepResult) -> list[dict[str, Any]]:
    """Colour, line style and marker of each grid point's line, in :func:`_grid_points` order."""
    sizes = result.shape[1:]
    styles = []
    for index in np.ndindex(*sizes):
        if len(sizes) == 0:
            styles.append({"color": "tab:blue", "linestyle": "-", "marker": "o"})
        elif len(sizes) <= 2:
            color = _sequential(sizes[0])[index[0]]
            k = index[1] if len(sizes) == 2 else 0
            styles.append({"color": color, "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
                           "marker": _MARKERS[k % len(_MARKERS)]})
        else:
            flat = int(np.ravel_multi_index(index, sizes))
            total = math.prod(sizes)
            color = (colormaps["tab20"](flat) if total <= 20 else _sequential(total)[flat])
            styles.append({"color": color, "linestyle": "-", "marker": "o"})
    return styles


def _class_colors(num_classes: int) -> list:
    if num_classes <= 10:
        return [colormaps["tab10"](c) for c in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](c) for c in range(num_classes)]
    return _sequential(num_classes)


def _legend(fig: Figure, ax, title: str) -> None:
    """A legend inside the axes for a few entries, outside on the right for many."""
    num = len(ax.get_legend_handles_labels()[0])
    if num <= _MAX_INLINE_LEGEND:
        ax.legend(title=title, fontsize="small", title_fontsize="small", loc="best")
    else:
        fig.legend(loc="outside right upper", title=title, fontsize="small",
                   title_fontsize="small", ncols=-(-num // 24))


def _default_extent(x: np.ndarray, centers) -> tuple[float, float, float, float]:
    pts = x.reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if centers is not None:
        pts = np.concatenate([pts, centers[np.isfinite(centers).all(axis=1)]])
    if pts.shape[0] == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = hi - lo
    pad = np.where(span > 0, 0.05 * span, np.maximum(1.0, 0.05 * np.abs(lo)))
    lo, hi = lo - pad, hi + pad
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def _check_extent(extent) -> tuple[float, float, float, float]:
    try:
        e = np.asarray(extent, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`extent` must be (xmin, xmax, ymin, ymax); got {extent!r}.") from err
    if e.shape != (4,) or not np.all(np.isfinite(e)) or not (e[0] < e[1] and e[2] < e[3]):
        raise ValueError(f"`extent` must be four finite numbers (xmin, xmax, ymin, ymax) with "
                         f"xmin < xmax and ymin < ymax; got {extent!r}.")
    return tuple(float(v) for v in e)
