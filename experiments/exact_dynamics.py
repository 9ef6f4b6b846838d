"""Exact population dynamics of curated retraining (a study that a configuration cannot say).

(a) a 10-state categorical model with rewards 0, 1/9, ..., 1; (b) the 8-mode ring discretised on a
G x G grid over [-1.5, 1.5]^2 with the clipped distance reward on mode 0. For K in {2, 4, 16, 64,
inf} and real-data fractions {0, 0.1, 0.3, 0.5} (the data law is the initial model), the expected
reward against generation; the heat maps of the reward, the initial density, the theoretical limit
p0( . | r = r*) and the iterate after T generations of pure curation; the table of
``sc.theory.check_theorems`` for every setting. Claims: every check holds; the pure-curation iterate
is within a stated total variation of the limit.

    python experiments/exact_dynamics.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import _cli  # experiments/_cli.py, beside this script
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import selfconsume as sc
from selfconsume.files import atomic_write

KS = (2, 4, 16, 64, math.inf)
FRACTIONS = (0.0, 0.1, 0.3, 0.5)
TV_CLAIM = 0.05  # pure curation (K = 4) ends within this total variation of the limit


def supports(grid: int):
    """The two finite supports: (name, p0, rewards, beta, centers-or-None)."""
    cat_r = jnp.linspace(0.0, 1.0, 10)
    cat_p = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(10)), jnp.float32)
    ticks = jnp.linspace(-1.5, 1.5, grid)
    gx, gy = jnp.meshgrid(ticks, ticks, indexing="xy")
    pts = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=1)
    centers = sc.data.ring_centers(8, 1.0)
    std = max(0.05, 3.0 / grid)  # at least one cell wide, so every mode is resolved
    d2 = jnp.sum((pts[:, None, :] - centers[None]) ** 2, axis=-1)
    ring_p = jnp.sum(jnp.exp(-0.5 * d2 / std**2), axis=1)
    ring_p = ring_p / jnp.sum(ring_p)
    ring_r = sc.rewards.distance(centers[0], scale=4.0, radius=0.1)(pts)
    return [("categorical", cat_p, cat_r, 5.0, None), ("ring", ring_p, ring_r, 2.0, grid)]


def heatmaps(path, p0, rewards, p_t, grid, generations):
    fig = Figure(figsize=(13, 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    panels = [("reward r(x)", rewards), ("initial density p0", p0),
              ("limit p0( . | r = r*)", sc.theory.limit(p0, rewards)),
              (f"iterate after {generations} generations (K = 4)", p_t)]
    for i, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        im = ax.imshow(np.asarray(values).reshape(grid, grid), origin="lower",
                       extent=(-1.5, 1.5, -1.5, 1.5), cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("$x_1$")
        if i == 0:
            ax.set_ylabel("$x_2$")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("exact dynamics on the 8-mode ring (pure curation)")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def reward_curves(path, curves, generations):
    fig = Figure(figsize=(13, 6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    for row, (name, by_k) in enumerate(curves.items()):
        for col, a in enumerate(FRACTIONS):
            ax = fig.add_subplot(2, len(FRACTIONS), row * len(FRACTIONS) + col + 1)
            for k, traj in by_k.items():
                ax.plot(np.arange(generations + 1), traj[col], label=f"K={k}")
            ax.set_title(f"{name}, real_fraction={a}", fontsize=9)
            ax.set_xlabel("generation")
            if col == 0:
                ax.set_ylabel("expected reward E[r]")
            ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("exact expected reward under curated retraining")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32 x 32 grid, fewer generations")
    p.add_argument("--out", default="runs/exact_dynamics")
    args = p.parse_args(argv)
    grid, generations = (32, 20) if args.quick else (128, 50)
    os.makedirs(args.out, exist_ok=True)
    curves, table, claims = {}, [], []
    for name, p0, r, beta, g in supports(grid):
        by_k = {}
        for k in KS:
            run = jax.jit(jax.vmap(lambda a, k=k: sc.theory.trajectory(
                p0, r, num_generations=generations, k=k, beta=beta, p_data=p0,
                real_fraction=a)))
            ps = run(jnp.asarray(FRACTIONS, jnp.float32))  # (fractions, T + 1, M)
            by_k["inf" if math.isinf(k) else k] = np.asarray(ps @ r)
            for a in FRACTIONS:
                checks = sc.theory.check_theorems(p0, r, k=k, beta=beta, p_data=p0,
                                                  real_fraction=a, num_generations=generations)
                table.append({"support": name, "k": str(k), "real_fraction": a,
                              **{c: v["holds"] for c, v in checks.items()},
                              "min_slack": min(v["slack"] for v in checks.values())})
            if k == 4:
                lim = sc.theory.limit(p0, r)
                tv = float(0.5 * jnp.sum(jnp.abs(ps[0, -1] - lim)))
                claims.append({"description": f"{name}: pure curation (K=4) ends within total "
                               f"variation {TV_CLAIM} of the limit", "value": tv,
                               "holds": tv < TV_CLAIM})
                if g is not None:
                    heatmaps(os.path.join(args.out, "ring_heatmaps.png"), p0, r, ps[0, -1], g,
                             generations)
        curves[name] = by_k
    reward_curves(os.path.join(args.out, "expected_reward.png"), curves, generations)
    checks_hold = all(all(v for c, v in row.items() if isinstance(v, bool)) for row in table)
    claims.insert(0, {"description": "every theorem check holds in every setting",
                      "value": len(table), "holds": checks_hold})
    summary = {"grid": grid, "generations": generations, "checks": table, "claims": claims}
    _cli.write_summary(args.out, summary)
    print(f"{'support':<12}{'K':>5}{'a':>6}  all checks hold  min slack")
    for row in table:
        ok = all(v for v in row.values() if isinstance(v, bool))
        print(f"{row['support']:<12}{row['k']:>5}{row['real_fraction']:>6}  {ok!s:<15}  "
              f"{row['min_slack']:+.1e}")
    return _cli.report(claims, show=lambda c: f"({c['value']:.3g})")


if __name__ == "__main__":
    sys.exit(main())
