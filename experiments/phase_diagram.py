"""Phase diagram of curated retraining over the real-data fraction (beyond the paper).

On the 8-mode ring with the clipped distance reward on mode 0 (scale 4, flat within 0.1), after T
generations: the expected reward and KL(p_data || p_T) over a real_fraction x K grid (beta = 1) and
a real_fraction x beta grid (K = 4), two ways side by side:

* population dynamics (``sc.theory``) on the ring's density discretised on a G x G grid over
  [-1.5, 1.5]^2 (p_0 = p_data = the normalised density at the cell centres, cells below 1e-30
  dropped so that no mass underflows in float32): for each K one
  compiled call vmapped over the grid (K is static in ``sc.theory``; K = inf is added);
* the sample-based loop with an 8-component GMM (10 EM steps per fit, ``num_samples`` kept
  samples per generation, ``seeds`` seeds): each grid is one compiled ``sc.sweep`` (K is swept
  through the traced ``num_candidates`` with ``LoopConfig.k = max K``). KL(p_data || p_T) is the
  Monte Carlo average of log p_data(x) - log p_T(x) over 8192 fresh points of the ring (p_data is
  the exact mixture density).

Theorem (Ferbach et al., 2024): with a fraction a > 0 of real data, p_{t+1} >= a p_data pointwise,
hence KL(p_data || p_t) <= log(1 / a) for every t >= 1. Claims: the bound holds at every grid point
with a > 0, exactly for the population dynamics and for every seed of the GMM loop.

    python experiments/phase_diagram.py [--quick] [--out DIR]
"""

from __future__ import annotations

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

STD, NUM_MODES, SCALE, RADIUS = 0.05, 8, 4.0, 0.1
SIZES = {  # full, quick
    "fractions": ((0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), (0.0, 0.1, 0.5)),
    "ks": ((2, 4, 8, 16), (2, 4)),
    "betas": ((0.25, 0.5, 1.0, 2.0, 4.0, 8.0), (0.5, 2.0)),
    "generations": (20, 5),
    "grid": (96, 48),
    "seeds": (4, 2),
    "num_samples": (2048, 512),
}


def ring_log_density(x):
    """log p_data(x) of the ring: the equal mixture of N(c_j, STD^2 I), j = 1..8."""
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    d2 = jnp.sum((x[:, None, :] - centers[None]) ** 2, axis=-1)
    return (jax.nn.logsumexp(-0.5 * d2 / STD**2, axis=1) - math.log(NUM_MODES)
            - math.log(2 * math.pi * STD**2))


def population(sizes, reward):
    """Final expected reward and KL(p_data || p_T) of sc.theory on both grids."""
    g = sizes["grid"]
    cells = sc.models.histogram_centers(g, -1.5, 1.5, 2)
    p0 = jax.nn.softmax(ring_log_density(cells))  # normalised density at the cell centres
    p0 = jnp.where(p0 > 1e-30, p0, 0.0)  # drop cells whose a * p0 would underflow in float32
    p0 = p0 / jnp.sum(p0)
    r = reward(cells)
    fractions = jnp.asarray(sizes["fractions"], jnp.float32)

    def final(k, beta, a):
        p_t = sc.theory.trajectory(p0, r, num_generations=sizes["generations"], k=k, beta=beta,
                                   p_data=p0, real_fraction=a)[-1]
        return p_t @ r, sc.metrics.kl_divergence(p0, p_t)

    by_k = [jax.jit(jax.vmap(lambda a, k=k: final(k, 1.0, a)))(fractions)
            for k in sizes["ks"] + (math.inf,)]
    reward_k = np.stack([np.asarray(v[0]) for v in by_k], axis=1)  # (fractions, ks + inf)
    kl_k = np.stack([np.asarray(v[1]) for v in by_k], axis=1)
    a_grid, b_grid = np.meshgrid(sizes["fractions"], sizes["betas"], indexing="ij")
    rb, klb = jax.jit(jax.vmap(lambda a, b: final(4, b, a)))(
        jnp.asarray(a_grid.reshape(-1), jnp.float32), jnp.asarray(b_grid.reshape(-1), jnp.float32))
    shape = a_grid.shape
    return {"k": (reward_k, kl_k), "beta": (np.asarray(rb).reshape(shape),
                                            np.asarray(klb).reshape(shape))}


def gmm_loop(sizes, reward, real, grid, k_max):
    """One compiled sc.sweep of the GMM loop: final reward_mean and KL(p_data || p_T)."""
    model = sc.models.gmm(8, 2, em_steps=10)
    config = sc.LoopConfig(num_generations=sizes["generations"],
                           num_samples=sizes["num_samples"], k=k_max)
    held_out, _ = sc.data.gaussian_ring(jax.random.key(123), 8192, std=STD)
    log_p_data = ring_log_density(held_out)

    def fn(key, real_fraction, beta=1.0, num_candidates=4):
        key_init, key_run = jax.random.split(key)
        params0 = model.init(key_init, real)
        hyper = sc.Hyperparams(beta=beta, real_fraction=real_fraction,
                               num_candidates=num_candidates)
        final, hist = sc.run(key_run, params0, real, hyper, model=model, reward_fn=reward,
                             config=config)
        diff = log_p_data - model.log_prob(final.params, held_out)
        return {"reward": hist["reward_mean"][-1], "kl": jnp.mean(diff),
                "kl_se": jnp.std(diff) / math.sqrt(diff.shape[0])}

    return sc.sweep(jax.random.key(7), fn, num_seeds=sizes["seeds"], grid=grid)


def figure(path, sizes, pop, loops):
    fig = Figure(figsize=(15, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fractions = np.asarray(sizes["fractions"])
    for row, (axis, cols) in enumerate((("k", [str(k) for k in sizes["ks"]] + ["inf"]),
                                        ("beta", [f"{b:g}" for b in sizes["betas"]]))):
        pop_reward, pop_kl = pop[axis]
        loop = loops[axis]
        gmm_reward = loop.values["reward"].mean(0)
        gmm_kl = loop.values["kl"].mean(0)
        for col, (name, values, labels) in enumerate((
                ("population dynamics: final E[r]", pop_reward, cols),
                ("GMM loop: final E[r] (seed mean)", gmm_reward, cols[: gmm_reward.shape[1]]))):
            ax = fig.add_subplot(2, 3, 3 * row + col + 1)
            vmin = min(pop_reward.min(), gmm_reward.min())
            vmax = max(pop_reward.max(), gmm_reward.max())
            im = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis", vmin=vmin,
                           vmax=vmax)
            for (i, j), v in np.ndenumerate(values):  # dark text on the bright cells
                bright = (v - vmin) > 0.6 * (vmax - vmin)
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if bright else "white")
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(len(fractions)), [f"{a:g}" for a in fractions])
            ax.set_xlabel("K" if axis == "k" else "beta (K = 4)")
            ax.set_ylabel("real_fraction")
            ax.set_title(name, fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.85)
        ax = fig.add_subplot(2, 3, 3 * row + 3)
        positive = fractions > 0
        grid_a = np.linspace(fractions[positive].min(), 1.0, 100)
        ax.plot(grid_a, np.log(1 / grid_a), color="black", linewidth=2,
                label="bound log(1/real_fraction)")
        colors = [ax._get_lines.get_next_color() for _ in cols]
        for j, label in enumerate(cols):
            ax.plot(fractions[positive], pop_kl[positive, j], color=colors[j], marker="o",
                    markersize=3, label=f"{axis}={label} exact")
            if j < gmm_kl.shape[1]:
                ax.plot(fractions[positive], gmm_kl[positive, j], color=colors[j], marker="x",
                        linestyle="--", markersize=4)
        ax.set_yscale("log")
        ax.set_xlabel("real_fraction")
        ax.set_ylabel("KL(p_data || p_T) [nats]")
        ax.set_title("KL to the data (solid: exact, dashed: GMM)", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"phase diagram after {sizes['generations']} generations (8-mode ring, reward on "
                 "mode 0)")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def bound_claims(pop, loops, sizes):
    fractions = np.asarray(sizes["fractions"])
    positive = fractions > 0
    bound = np.log(1 / fractions[positive])[:, None]
    claims = []
    for axis in ("k", "beta"):
        kl = pop[axis][1][positive]
        slack = float(np.min(bound - kl))
        claims.append({"description": f"population dynamics, real_fraction x {axis}: "
                       "KL(p_data || p_T) <= log(1/real_fraction) at every grid point",
                       "min_slack": slack, "holds": bool(slack >= 0)})
        kl = loops[axis].values["kl"][:, positive]  # (seeds, fractions, cols)
        slack = float(np.min(bound[None] - kl))
        claims.append({"description": f"GMM loop, real_fraction x {axis}: KL(p_data || p_T) <= "
                       "log(1/real_fraction) at every grid point, every seed",
                       "min_slack": slack, "holds": bool(slack >= 0)})
    return claims


def main(argv=None) -> int:
    args, sizes = _cli.setup(__doc__, "phase_diagram", "a smaller grid, fewer generations", SIZES, argv)
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    reward = sc.rewards.distance(centers[0], scale=SCALE, radius=RADIUS)
    real, _ = sc.data.gaussian_ring(jax.random.key(0), 8192, std=STD)

    pop = population(sizes, reward)
    loops = {
        "k": gmm_loop(sizes, reward, real, {"real_fraction": sizes["fractions"],
                                            "num_candidates": sizes["ks"]}, max(sizes["ks"])),
        "beta": gmm_loop(sizes, reward, real, {"real_fraction": sizes["fractions"],
                                               "beta": sizes["betas"]}, 4),
    }
    for axis, loop in loops.items():
        loop.save(args.out, name=f"gmm_{axis}")
    figure(os.path.join(args.out, "phase_diagram.png"), sizes, pop, loops)
    claims = bound_claims(pop, loops, sizes)
    summary = {"sizes": sizes, "claims": claims,
               "population": {a: {"reward": v[0].tolist(), "kl": v[1].tolist()}
                              for a, v in pop.items()},
               "gmm": {a: {"reward": loop.values["reward"].mean(0).tolist(),
                           "kl": loop.values["kl"].mean(0).tolist(),
                           "kl_mc_se_max": float(loop.values["kl_se"].max()),
                           "compile_s": loop.metadata["compile_seconds"],
                           "run_s": loop.metadata["run_seconds"]}
                       for a, loop in loops.items()}}
    _cli.write_summary(args.out, summary)
    for axis, cols in (("k", [str(k) for k in sizes["ks"]] + ["inf"]),
                       ("beta", [f"{b:g}" for b in sizes["betas"]])):
        print(f"final E[r] and KL, real_fraction x {axis} (exact | GMM seed mean)")
        print(f"{'a':>6} " + " ".join(f"{axis}={c:>5}" for c in cols))
        for i, a in enumerate(sizes["fractions"]):
            exact = " ".join(f"{pop[axis][0][i, j]:+8.3f}" for j in range(len(cols)))
            gmm = " ".join(f"{v:+8.3f}" for v in loops[axis].values["reward"].mean(0)[i])
            print(f"{a:>6g} E[r] {exact} | {gmm}")
            exact = " ".join(f"{pop[axis][1][i, j]:8.3f}" for j in range(len(cols)))
            gmm = " ".join(f"{v:8.3f}" for v in loops[axis].values["kl"].mean(0)[i])
            print(f"{'':>6} KL   {exact} | {gmm}")
    return _cli.report(claims, show=lambda c: f"(min slack {c['min_slack']:.3g})")


if __name__ == "__main__":
    sys.exit(main())
