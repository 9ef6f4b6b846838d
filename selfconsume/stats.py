r"""Statistics over seeds: the mean and its Student-t confidence interval.

For ``S`` seeds with values :math:`v_1..v_S`, sample mean :math:`\bar v` and sample standard
deviation :math:`s` (``ddof = 1``), the level-:math:`\ell` interval of the mean is

.. math:: \bar v \pm t_{(1+\ell)/2,\,S-1}\, s / \sqrt{S},

with the Student-t quantile from SciPy when it is installed, else from an exact series
(``S - 1 <= 1000``) or the Cornish-Fisher expansion. The summaries, the command line and the
figures all use :func:`mean_and_interval`.
"""

from __future__ import annotations

import math
import numbers
import statistics

import numpy as np

__all__ = ["mean_and_interval", "check_level", "numeric"]


def mean_and_interval(values, *, axis: int = 0,
                      level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean along ``axis`` and the Student-t confidence interval of that mean.

    ``mean ± t_{(1+level)/2, S-1} * sd / sqrt(S)`` with ``sd`` the sample standard deviation
    (``ddof=1``) of the ``S = values.shape[axis]`` entries. With ``S = 1`` the interval is empty:
    ``low = high = mean``. A NaN among the entries gives NaN (nothing is dropped).

    Args:
        values: array-like of numbers, shape ``(..., S, ...)`` with ``S >= 1`` along ``axis``.
        axis: the axis to average over (negative values count from the end).
        level: confidence level in ``(0, 1)``.

    Returns:
        ``(mean, low, high)``, float64 arrays of ``values``' shape without ``axis`` (NumPy
        scalars for 1-D ``values``).

    Raises:
        ValueError: if ``values`` is not numeric or is 0-d, ``axis`` is out of range or not an
            integer, the axis is empty, or ``level`` is not in ``(0, 1)``.
    """
    a = numeric("values", values)
    if a.ndim == 0:
        raise ValueError("`values` must have at least one axis to average over; got a 0-d "
                         "array.")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"`axis` must be an integer; got {axis!r}.")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"`axis` must be in [{-a.ndim}, {a.ndim - 1}] for `values` of shape "
                         f"{a.shape}; got {axis}.")
    check_level(level)
    n = a.shape[axis]
    if n == 0:
        raise ValueError(f"`values` must have at least one entry along axis {axis}; got shape "
                         f"{a.shape}.")
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.mean(a, axis=axis)
        if n == 1:
            return mean, mean.copy(), mean.copy()
        half = _t_quantile(level, n - 1) * np.std(a, axis=axis, ddof=1) / math.sqrt(n)
        return mean, mean - half, mean + half


def check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"`level` must be a number in (0, 1), e.g. 0.95; got {level!r}.")
    return float(level)


def _t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t quantile ``t_{(1+level)/2, df}`` (SciPy if available)."""
    try:
        import scipy.stats
    except ImportError:
        return _t_quantile_builtin(level, df)
    return float(scipy.stats.t.ppf(0.5 + 0.5 * level, df))


def _t_quantile_builtin(level: float, df: int) -> float:
    """The same quantile without SciPy: exact series for ``df <= 1000``, Cornish-Fisher above."""
    if df > 1000:
        z = statistics.NormalDist().inv_cdf(0.5 + 0.5 * level)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3

    if df % 2 == 0:
        j = np.arange(1, df // 2)
        ratios = (2 * j - 1) / (2 * j)                      # (2j-1)!!/(2j)!! step by step
    else:
        j = np.arange(1, (df - 1) // 2)
        ratios = (2 * j) / (2 * j + 1)                      # (2j)!!/(2j+1)!! step by step
    coef = np.concatenate([[1.0], np.cumprod(ratios)])
    powers = np.arange(coef.size)

    def two_sided_cdf(theta: float) -> float:               # P(|T| <= sqrt(df) tan(theta))
        c, s = math.cos(theta), math.sin(theta)
        series = float(np.sum(coef * (c * c) ** powers))
        if df % 2 == 0:
            return s * series
        return 2 / math.pi * (theta + (s * c * series if df > 1 else 0.0))

    lo, hi = 0.0, math.pi / 2
    for _ in range(80):                                      # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if two_sided_cdf(mid) < level:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def numeric(name: str, value, *, label: str | None = None) -> np.ndarray:
    """``value`` as a float64 array; ``label`` names a metric in the message."""
    try:
        a = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"`{name}` must be an array of numbers; got {value!r}.") from err
    if a.dtype.kind not in "biuf":
        what = f"`{name}` {label!r}" if label else f"`{name}`"
        raise ValueError(f"{what} must hold numbers (bool, int or float); got dtype {a.dtype}.")
    return a.astype(np.float64)
