"""Drifting preferences: does a preference that drifts toward what the model shows accelerate
collapse, stop it, or move the fixed point?

The curator's reward is linear in one-hot state features, r_t(x) = w_t[x], and drifts toward the
model's own distribution (``sc.preferences.linear("states", w0, eta=eta)``; exact dynamics
``sc.theory.drift_trajectory``):

    p_{t+1} = a p_data + (1 - a) p_t H_{p_t}[beta w_t],   w_{t+1} = (1 - eta) w_t + eta p_{t+1},

with Luce curation (K = 4). eta = 0 is the fixed reward w_0; for eta > 0 the reward forgets w_0
geometrically and becomes an average of the model's recent laws: popularity feeds preference.
Every fixed point (p*, w*) with eta > 0 has w* = p*, whatever eta is: the set of fixed points is the
same for every eta in (0, 1] (and differs from eta = 0's); eta can only change which one the loop
reaches.

**The support, and why.** With one-hot features the drift target p_t(x) is a probability, so the
popularity reward beta p_t(x) is only comparable with w_0 when a few states hold most of the mass.
Part 1 uses a small 1-D support where it is: S = 16 states x = 0..15, four reward levels
r = floor(x / 4) / 3 in {0, 1/3, 2/3, 1} (w_0 = r; top-reward set {12..15}), and
p_0 = p_data = 0.4 N(2, 1) + 0.6 ramp (a discretised bump on state 2, reward 0, plus weights
proportional to 1 + x/8, so that the top set holds 0.21 of the mass with its states not tied),
beta = 5. The model's favourite state is x = 2 (p_0 = 0.185) and has the lowest reward.
Part 2 repeats the diagram on the 8-mode ring discretised as in ``ecosystem.py`` (S ~ 250 cells,
w_0 = the clipped distance reward on mode 0, scale 4, flat within 0.1, beta = 2), the one-hot
choice of the issue: there p_t(x) ~ 1/S, so beta p_t is almost flat unless the model concentrates.

1. Exact phase diagram on the 1-D support: ``drift_trajectory`` vmapped over eta in
   linspace(0, 1, n_eta) x a in linspace(0, 0.5, n_a) (one compiled call), T generations; per
   (eta, a): the final expected original reward E_T[r] = sum p_T r, the entropy of p_T, the mass of
   the top-reward set, the largest state mass, and the L1 change of the last step (convergence).
   The basin boundary a_c(eta) (the smallest a at which the top set ends below half the mass) is
   bracketed on the grid and bisected; at a = 0 the collapse time t_99 (first t with a state
   holding 99% of the mass) per eta.
2. The same diagram on the ring (coarser grid): mode-0 share and E_T[r] at T.
3. Sampled check: the categorical loop ``sc.run(..., preference=sc.preferences.linear("states",
   r, eta=eta))`` (real data: the 16 states weighted by p_data, so the loop starts exactly at
   p_0; ``num_samples`` kept samples per generation; the drift reads the mean one-hot feature of
   the generation's candidates) at two (eta, a) points, one per basin, ``seeds`` seeds in one
   compiled ``sc.sweep``: the seed mean of E_t[r] and of the largest state mass max_x p_t(x),
   against ``drift_trajectory``, and the share of seeds that end on the exact trajectory's
   favourite state (inside the top set the states differ by a few percent in p_0, less than the
   sampling noise, and popularity amplifies whichever leads: which top state wins is random in
   the sampled loop, so the statistics compared are those that do not depend on it).

Claims (each checks itself; exit status 1 if one fails): (i) eta = 0 reproduces
``sc.theory.trajectory`` with the fixed reward (E_t[r] within 1e-5); (ii) every grid point has
converged (L1 change of the last step below CONVERGED_TOL); (iii) at eta = 0 the expected reward
rises for every a (E_T > E_0: a fixed preference always improves it); (iv) at a = 0 the drift does
not stop collapse, it sharpens it: for every eta E_T[r] = max r, and for every eta > 0 one state
ends with more than 99% of the mass (entropy < 0.06 nats), against the entropy of the limit
p_0(. | top set) at eta = 0; (v) the fixed point moves and does not depend on eta: for every a > 0
the final laws with eta > 0 fall into at most two groups (top set above or below half the mass)
whose members agree within FIXED_TOL in L1, and every group differs from the eta = 0 law by more
than 0.01; (vi) drift reverses curation: at a = 0.5 every eta > 0 ends with E_T[r] < E_0[r]
(collapse onto the favourite state x = 2, the lowest reward), and a_c(eta) is non-increasing in
eta; (vii) on the ring, a = 0 ends on mode 0 (share > 0.99) for every eta, and at a = 0.5 every
eta > 0 ends within RING_TOL in L1 of p_data (the drifting reward has forgotten mode 0); (viii)
the sampled loop's seed means are within the Bonferroni Student-t quantile (family level 5% over
the generations) of standard errors (floored at SE_FLOOR) of the exact trajectory at every
generation, for both statistics (E_t[r] and max_x p_t(x)) and both points.

    python experiments/drifting_preferences.py [--quick] [--out DIR]
"""

from __future__ import annotations

import math
import os
import sys
import time

import _cli  # experiments/_cli.py, beside this script
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import selfconsume as sc
from selfconsume.files import atomic_write

NUM_STATES, LEVELS, BUMP_STATE = 16, 4, 2
BETA, K = 5.0, 4
RING_BETA, RING_STD, RING_SCALE, RING_RADIUS = 2.0, 0.05, 4.0, 0.1
HI = jax.lax.Precision.HIGHEST
CONVERGED_TOL = 1e-5  # claim (ii): L1 change of the last step
FIXED_TOL = 1e-4  # claim (v): L1 between the final laws of one basin
COLLAPSE = 0.99  # claim (iv): a state holds this much mass
RING_TOL = 0.1  # claim (vii): L1(p_T, p_data) on the ring at a = 0.5, eta > 0
SE_FLOOR = 1e-3  # claim (viii)
FAMILY_LEVEL = 0.05
SIZES = {  # full, quick
    "n_eta": (21, 11),
    "n_a": (21, 11),
    "generations": (400, 300),
    "bisection_steps": (10, 6),
    "ring_grid": (64, 40),
    "ring_n": (11, 6),
    "ring_generations": (200, 100),
    "check_points": (((0.5, 0.1), (1.0, 0.5)), ((0.5, 0.1), (1.0, 0.5))),  # (eta, a)
    "check_generations": (30, 20),
    "seeds": (16, 16),
    "num_samples": (4096, 2048),
}


def line_support():
    """(p0, r) on the 16-state support of the module docstring."""
    x = np.arange(NUM_STATES, dtype=np.float64)
    r = np.floor(x / (NUM_STATES // LEVELS)) / (LEVELS - 1)
    bump = np.exp(-0.5 * (x - BUMP_STATE) ** 2)
    ramp = 1.0 + x / 8.0
    p0 = 0.4 * bump / bump.sum() + 0.6 * ramp / ramp.sum()
    return jnp.asarray(p0 / p0.sum(), jnp.float32), jnp.asarray(r, jnp.float32)


def ring_support(grid, cut=3.0):
    """(p0, r, on mode 0) on the ring cells within ``cut`` std of a mode centre, as ecosystem.py."""
    std = max(RING_STD, 3.0 / grid)
    centers = sc.data.ring_centers(8, 1.0)
    cells = sc.models.histogram_centers(grid, -1.5, 1.5, 2)
    d2 = jnp.sum((cells[:, None, :] - centers[None]) ** 2, axis=-1)
    index = np.flatnonzero(np.asarray(jnp.min(d2, axis=1) <= (cut * std) ** 2))
    cells, d2 = cells[index], d2[index]
    p0 = jax.nn.softmax(jax.nn.logsumexp(-0.5 * d2 / std**2, axis=1))
    r = sc.rewards.distance(centers[0], scale=RING_SCALE, radius=RING_RADIUS)(cells)
    return p0, r, (jnp.argmin(d2, axis=1) == 0).astype(p0.dtype)


def entropy(p):
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def t_quantile(level, num_seeds):
    """The two-sided Student-t quantile t_{(1+level)/2, S-1} that sc.stats.mean_and_interval
    uses (read off an interval of a sample with unit standard deviation)."""
    x = np.arange(num_seeds, dtype=np.float64)
    x = x / x.std(ddof=1)
    mean, _, high = sc.stats.mean_and_interval(x, level=level)
    return float((high - mean) * math.sqrt(num_seeds))


# --------------------------------------------------------------------------------------------
# 1. Exact phase diagram on the 1-D support
# --------------------------------------------------------------------------------------------


def line_paths(p0, r, T, beta):
    """A jitted vmapped function (eta, a) -> per point: E_t[r] (T + 1), entropy (T + 1), largest
    state mass (T + 1), top-set mass at T, p_T, L1 change of the last step."""
    features = jnp.eye(p0.shape[0], dtype=p0.dtype)
    top = (r >= jnp.max(r)).astype(p0.dtype)

    def path(eta, a):
        ps, _ = sc.theory.drift_trajectory(p0, features, r, eta=eta, num_generations=T, k=K,
                                           beta=beta, p_data=p0, real_fraction=a)
        return {"reward": jnp.matmul(ps, r, precision=HI), "entropy": entropy(ps),
                "pmax": jnp.max(ps, axis=-1), "top": jnp.matmul(ps[-1], top, precision=HI),
                "final": ps[-1], "last_l1": jnp.sum(jnp.abs(ps[-1] - ps[-2]))}

    return jax.jit(jax.vmap(path))


def run_grid(fn, etas, fractions):
    e, a = np.meshgrid(etas, fractions, indexing="ij")
    out = fn(jnp.asarray(e.reshape(-1), jnp.float32), jnp.asarray(a.reshape(-1), jnp.float32))
    return {k: np.asarray(v, np.float64).reshape(e.shape + v.shape[1:]) for k, v in out.items()}


def line_exact(sizes, p0, r):
    T = sizes["generations"]
    etas = np.linspace(0.0, 1.0, sizes["n_eta"])
    fractions = np.linspace(0.0, 0.5, sizes["n_a"])
    fn = line_paths(p0, r, T, BETA)
    t0 = time.perf_counter()
    grid = run_grid(fn, etas, fractions)
    grid_seconds = time.perf_counter() - t0
    # the basin boundary a_c(eta): the top set ends below half the mass for a >= a_c(eta)
    popular = grid["top"] < 0.5  # (eta, a)
    crossings = np.sum(np.diff(popular.astype(int), axis=1) != 0, axis=1)
    has = popular.any(axis=1) & ~popular[:, 0]
    first = np.where(has, np.argmax(popular, axis=1), 0)
    lo = np.where(has, fractions[np.maximum(first - 1, 0)], np.nan)
    hi = np.where(has, fractions[first], np.nan)
    rows = np.flatnonzero(has)
    t1 = time.perf_counter()
    if rows.size:
        lo_b, hi_b = lo[rows].copy(), hi[rows].copy()
        for _ in range(sizes["bisection_steps"]):
            mid = 0.5 * (lo_b + hi_b)
            out = fn(jnp.asarray(etas[rows], jnp.float32), jnp.asarray(mid, jnp.float32))
            pop = np.asarray(out["top"]) < 0.5
            lo_b, hi_b = np.where(pop, lo_b, mid), np.where(pop, mid, hi_b)
        lo[rows], hi[rows] = lo_b, hi_b
    boundary = 0.5 * (lo + hi)
    print(f"1-D support: {len(etas)} eta x {len(fractions)} a, T = {T} ({grid_seconds:.1f} s); "
          f"boundary bisected ({time.perf_counter() - t1:.1f} s)", flush=True)
    # eta = 0 against sc.theory.trajectory with the fixed reward
    ref = jax.jit(jax.vmap(lambda a: jnp.matmul(sc.theory.trajectory(
        p0, r, num_generations=T, k=K, beta=BETA, p_data=p0, real_fraction=a), r,
        precision=HI)))(jnp.asarray(fractions, jnp.float32))
    return {"etas": etas, "fractions": fractions, "grid": grid, "boundary": boundary,
            "boundary_halfwidth": float(np.nanmax(hi - lo)) / 2 if rows.size else 0.0,
            "crossings": crossings, "reference": np.asarray(ref, np.float64),
            "seconds": grid_seconds}


# --------------------------------------------------------------------------------------------
# 2. The ring
# --------------------------------------------------------------------------------------------


def ring_exact(sizes):
    p0, r, on0 = ring_support(sizes["ring_grid"])
    T = sizes["ring_generations"]
    etas = np.linspace(0.0, 1.0, sizes["ring_n"])
    fractions = np.linspace(0.0, 0.5, sizes["ring_n"])
    features = jnp.eye(p0.shape[0], dtype=p0.dtype)

    def path(eta, a):
        ps, _ = sc.theory.drift_trajectory(p0, features, r, eta=eta, num_generations=T, k=K,
                                           beta=RING_BETA, p_data=p0, real_fraction=a)
        return {"share": jnp.matmul(ps[-1], on0, precision=HI),
                "reward": jnp.matmul(ps[-1], r, precision=HI),
                "to_data": jnp.sum(jnp.abs(ps[-1] - p0)),
                "last_l1": jnp.sum(jnp.abs(ps[-1] - ps[-2]))}

    t0 = time.perf_counter()
    grid = run_grid(jax.jit(jax.vmap(path)), etas, fractions)
    seconds = time.perf_counter() - t0
    print(f"ring: {p0.shape[0]} cells, {len(etas)} eta x {len(fractions)} a, T = {T} "
          f"({seconds:.1f} s)", flush=True)
    return {"etas": etas, "fractions": fractions, "grid": grid, "num_states": int(p0.shape[0]),
            "E0": float(p0 @ r), "share0": float(p0 @ on0), "seconds": seconds}


# --------------------------------------------------------------------------------------------
# 3. The sampled loop
# --------------------------------------------------------------------------------------------


def sampled(sizes, p0, r):
    points = sizes["check_points"]
    T = sizes["check_generations"]
    S = p0.shape[0]
    model = sc.models.categorical(S)
    states = jnp.arange(S, dtype=jnp.int32)
    params0 = model.init(jax.random.key(0), states, p0)
    reward = sc.rewards.table(r)
    config = sc.LoopConfig(num_generations=T, num_samples=sizes["num_samples"], k=K)
    etas = jnp.asarray([e for e, _ in points], jnp.float32)
    fractions = jnp.asarray([a for _, a in points], jnp.float32)
    # exact: E_t[r], the largest state mass, and the state that ends with the most mass
    exact_r, exact_m, target = [], [], []
    for e, a in points:
        ps, _ = sc.theory.drift_trajectory(p0, jnp.eye(S), r, eta=e, num_generations=T, k=K,
                                           beta=BETA, p_data=p0, real_fraction=a)
        ps = np.asarray(ps, np.float64)
        target.append(int(np.argmax(ps[-1])))
        exact_r.append(ps @ np.asarray(r, np.float64))
        exact_m.append(ps.max(-1))

    def fn(key, point):
        pref = sc.preferences.linear("states", r, eta=etas[point])
        _, hist = sc.run(key, params0, states,
                         sc.Hyperparams(beta=BETA, real_fraction=fractions[point]), model=model,
                         reward_fn=reward, config=config, real_weights=p0, preference=pref,
                         metrics_fn=lambda state, info: {"probs": state.params.probs})
        return {"reward": hist["expected_reward"], "pmax": jnp.max(hist["probs"], axis=-1),
                "winner": jnp.argmax(hist["probs"][-1]), "finite": jnp.all(hist["fit_is_finite"])}

    res = sc.sweep(jax.random.key(11), fn, num_seeds=sizes["seeds"],
                   grid={"point": list(range(len(points)))})
    print(f"sampled loop: compile {res.metadata['compile_seconds']:.1f} s, run "
          f"{res.metadata['run_seconds']:.1f} s", flush=True)
    seeds = sizes["seeds"]
    out = {"points": [list(p) for p in points], "targets": target, "result": res}
    t_b = t_quantile(1 - FAMILY_LEVEL / T, seeds)
    winners = np.asarray(res.values["winner"])  # (S, P)
    out["same_winner"] = [float(np.mean(winners[:, j] == target[j])) for j in range(len(points))]
    for name, ex in (("reward", exact_r), ("pmax", exact_m)):
        v = np.asarray(res.values[name], np.float64)  # (S, P, T + 1)
        mean = v.mean(0)
        se = v.std(0, ddof=1) / math.sqrt(seeds)
        ex = np.stack(ex)
        out[name] = {"exact": ex, "mean": mean, "se": se,
                     "z": (mean - ex) / np.maximum(se, SE_FLOOR)}
    out["t_bonferroni"] = t_b
    out["finite"] = bool(np.all(res.values["finite"]))
    return out


# --------------------------------------------------------------------------------------------
# Figure and claims
# --------------------------------------------------------------------------------------------


def heat(ax, fig, values, etas, fractions, title, cmap="viridis", label=None, vmin=None,
         vmax=None):
    da, de = fractions[1] - fractions[0], etas[1] - etas[0]
    im = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                   extent=(fractions[0] - da / 2, fractions[-1] + da / 2, etas[0] - de / 2,
                           etas[-1] + de / 2), interpolation="nearest")
    ax.set_xlabel("real_fraction a")
    ax.set_ylabel("drift rate eta")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85, label=label)


def figure(path, sizes, p0, r, line, ring, check):
    fig = Figure(figsize=(19, 9.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    etas, fractions, g = line["etas"], line["fractions"], line["grid"]
    e0 = float(np.asarray(p0) @ np.asarray(r))

    ax = fig.add_subplot(2, 4, 1)
    x = np.arange(NUM_STATES)
    ax.bar(x, np.asarray(p0), color="tab:blue", alpha=0.7, label="p_0 = p_data")
    ax.set_xlabel("state x")
    ax.set_ylabel("probability")
    ax2 = ax.twinx()
    ax2.step(x, np.asarray(r), where="mid", color="tab:red", label="w_0 = r")
    ax2.set_ylabel("reward r", color="tab:red")
    ax.set_title(f"the 1-D support (beta = {BETA:g}, K = {K}); E_0[r] = {e0:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center")

    ax = fig.add_subplot(2, 4, 2)
    heat(ax, fig, g["reward"][..., -1], etas, fractions,
         f"E_T[r] after T = {sizes['generations']} (E_0 = {e0:.2f})", cmap="RdBu",
         label="E_T[r]", vmin=2 * e0 - 1, vmax=1.0)
    ok = np.isfinite(line["boundary"])
    ax.plot(line["boundary"][ok], etas[ok], color="gold", marker="o", markersize=3,
            markeredgecolor="black", linewidth=1.5, label="a_c(eta), bisected")
    ax.legend(fontsize=7, loc="upper right")

    ax = fig.add_subplot(2, 4, 3)
    heat(ax, fig, g["entropy"][..., -1], etas, fractions, "entropy of p_T (nats)",
         label="nats")
    ax = fig.add_subplot(2, 4, 4)
    heat(ax, fig, g["top"], etas, fractions, "mass of the top-reward set {12..15} at T",
         label="mass", vmin=0, vmax=1)

    ax = fig.add_subplot(2, 4, 5)
    t = np.arange(sizes["generations"] + 1)
    for eta in (0.0, 0.05, 0.1, 0.3, 0.5, 1.0):
        i = int(np.argmin(np.abs(etas - eta)))
        ax.plot(t, g["entropy"][i, 0], label=f"eta = {etas[i]:g}")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("generation t")
    ax.set_ylabel("entropy of p_t (nats)")
    ax.set_title("a = 0: the drift turns the top set into one state", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 6)
    tc = np.arange(sizes["check_generations"] + 1)
    colors = ["tab:green", "tab:purple"]
    for j, (eta, a) in enumerate(check["points"]):
        for name, ls, lab in (("reward", "-", "E_t[r]"), ("pmax", "--", "max_x p_t(x)")):
            d = check[name]
            ax.plot(tc, d["exact"][j], color=colors[j], linestyle=ls,
                    label=f"{lab}, eta = {eta:g}, a = {a:g}")
            ax.errorbar(tc, d["mean"][j], yerr=2 * d["se"][j], color=colors[j],
                        linestyle="none", marker="o", markersize=2, capsize=1.5)
    ax.set_xlabel("generation t")
    ax.set_ylabel("exact (lines), sampled seed mean +- 2 SE")
    ax.set_title(f"categorical loop, {sizes['seeds']} seeds, {sizes['num_samples']} kept "
                 f"samples per generation", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    re, rf, rg = ring["etas"], ring["fractions"], ring["grid"]
    ax = fig.add_subplot(2, 4, 7)
    heat(ax, fig, rg["share"], re, rf,
         f"ring ({ring['num_states']} cells, beta = {RING_BETA:g}): mode-0 share at "
         f"T = {sizes['ring_generations']}", label="share", vmin=0, vmax=1)
    ax = fig.add_subplot(2, 4, 8)
    for eta in (0.0, 0.1, 0.3, 0.5, 1.0):
        i = int(np.argmin(np.abs(re - eta)))
        ax.plot(rf, rg["share"][i], marker="o", markersize=3, label=f"eta = {re[i]:g}")
    ax.axhline(ring["share0"], color="grey", linestyle="--", linewidth=1, label="p_data")
    ax.set_xlabel("real_fraction a")
    ax.set_ylabel("mode-0 share at T")
    ax.set_title("ring: drift erases the preference once real data is mixed in", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("curated retraining under a preference drifting toward the model's own "
                 "distribution, w_t = (1 - eta) w_{t-1} + eta p_t (one-hot features, Luce K = 4)")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def basins(final, top, positive):
    """Per a (column): the groups of eta > 0 (rows 1..) by top >= 1/2, the largest L1 spread
    inside a group, and the smallest L1 distance of a group's laws to the eta = 0 law."""
    spread, distance = [], []
    for j in np.flatnonzero(positive):
        for side in (True, False):
            rows = 1 + np.flatnonzero((top[1:, j] >= 0.5) == side)
            if rows.size == 0:
                continue
            laws = final[rows, j]
            spread.append(float(np.max(np.sum(np.abs(laws - laws[:1]), axis=-1))))
            distance.append(float(np.min(np.sum(np.abs(laws - final[0, j]), axis=-1))))
    return max(spread), min(distance)


def claims_of(sizes, p0, r, line, ring, check):
    claims = []

    def claim(description, value, holds):
        claims.append({"description": description, "value": value, "holds": bool(holds)})

    fractions, g = line["fractions"], line["grid"]
    e0 = float(np.asarray(p0, np.float64) @ np.asarray(r, np.float64))
    dev = float(np.max(np.abs(g["reward"][0] - line["reference"])))
    claim("(i) eta = 0 reproduces sc.theory.trajectory with the fixed reward (value: max |E_t[r] "
          "difference| over t and a, tolerance 1e-5)", dev, dev <= 1e-5)
    worst = float(g["last_l1"].max())
    claim(f"(ii) every grid point has converged after T = {sizes['generations']}: L1 change of the "
          f"last step below {CONVERGED_TOL:g} (value: the largest)", worst, worst <= CONVERGED_TOL)
    low = float(np.min(g["reward"][0, :, -1] - e0))
    claim("(iii) eta = 0: E_T[r] > E_0[r] for every a (value: the smallest gain)", low, low > 0)
    rmax = float(np.max(r))
    dev = float(np.max(np.abs(g["reward"][:, 0, -1] - rmax)))
    ent = g["entropy"][:, 0, -1]
    pmax = g["pmax"][1:, 0, -1]
    limit = np.asarray(sc.theory.limit(p0, r), np.float64)
    lim_ent = float(-np.sum(np.where(limit > 0, limit * np.log(np.where(limit > 0, limit, 1)),
                                     0)))
    claim(f"(iv) a = 0: E_T[r] = max r for every eta, and for every eta > 0 one state holds more "
          f"than {COLLAPSE:g} of the mass, against the entropy {lim_ent:.3f} of p_0( . | top) at "
          f"eta = 0 (value: [max |E_T - max r|, smallest largest mass for eta > 0, entropy at "
          f"eta = 0, largest entropy for eta > 0])",
          [dev, float(pmax.min()), float(ent[0]), float(ent[1:].max())],
          dev <= 1e-4 and pmax.min() > COLLAPSE and abs(ent[0] - lim_ent) < 1e-3)
    spread, distance = basins(g["final"][..., :], g["top"], fractions > 0)
    claim(f"(v) for every a > 0 the final laws with eta > 0 fall into at most two groups (top set "
          f"above or below half the mass) agreeing within L1 {FIXED_TOL:g}, each more than 0.01 "
          f"away from the eta = 0 law (value: [largest spread in a group, smallest distance to "
          f"eta = 0])", [spread, distance], spread <= FIXED_TOL and distance > 0.01)
    last = g["reward"][1:, -1, -1]
    claim(f"(vi) a = {fractions[-1]:g}: every eta > 0 ends with E_T[r] < E_0[r] = {e0:.3f} (value: "
          f"the largest E_T)", float(last.max()), last.max() < e0)
    b = line["boundary"][1:]
    ok = np.isfinite(b)
    steps = np.diff(b[ok])
    tol = 2 * line["boundary_halfwidth"] + 1e-9
    claim(f"(vi) the basin boundary a_c(eta) exists for every eta > 0, crosses once along a, and "
          f"is non-increasing in eta (within the bisection bracket {tol:.1e}; value: [number of "
          f"eta > 0 with a boundary, largest step])",
          [int(ok.sum()), float(steps.max()) if steps.size else 0.0],
          ok.all() and np.all(line["crossings"][1:] == 1)
          and (steps.size == 0 or steps.max() <= tol))
    rg = ring["grid"]
    share0 = float(rg["share"][:, 0].min())
    to_data = float(rg["to_data"][1:, -1].max())
    claim(f"(vii) ring: at a = 0 every eta ends on mode 0 (share > {COLLAPSE:g}), and at "
          f"a = {ring['fractions'][-1]:g} every eta > 0 ends within L1 {RING_TOL:g} of p_data "
          f"(value: [smallest share at a = 0, largest L1 to p_data])", [share0, to_data],
          share0 > COLLAPSE and to_data <= RING_TOL)
    zs = {name: float(np.max(np.abs(check[name]["z"][:, 1:]))) for name in ("reward", "pmax")}
    claim(f"(viii) the sampled categorical loop tracks drift_trajectory: |seed mean - exact| / SE "
          f"<= {check['t_bonferroni']:.2f} (Bonferroni t, {sizes['seeds']} seeds, family level "
          f"{FAMILY_LEVEL:g} over {sizes['check_generations']} generations) at every generation, "
          f"for E_t[r] and the largest state mass max_x p_t(x), at (eta, a) = {check['points']}; fits "
          f"finite (value: max |z| per statistic)", zs,
          max(zs.values()) <= check["t_bonferroni"] and check["finite"])
    return claims


def main(argv=None) -> int:
    args, sizes = _cli.setup(__doc__, "drifting_preferences", "coarser grids, fewer generations", SIZES, argv)
    t_start, c_start = time.perf_counter(), time.process_time()
    p0, r = line_support()
    e0 = float(p0 @ r)
    print(f"1-D support: E_0[r] = {e0:.4f}, top-set mass {float(p0[r >= r.max()].sum()):.3f}, "
          f"favourite state {int(jnp.argmax(p0))} (p = {float(p0.max()):.3f})", flush=True)
    line = line_exact(sizes, p0, r)
    ring = ring_exact(sizes)
    check = sampled(sizes, p0, r)
    check["result"].save(args.out, name="sampled")
    figure(os.path.join(args.out, "drifting_preferences.png"), sizes, p0, r, line, ring, check)
    claims = claims_of(sizes, p0, r, line, ring, check)

    etas, fractions, g = line["etas"], line["fractions"], line["grid"]
    t99 = []
    for i in range(len(etas)):
        hit = np.flatnonzero(g["pmax"][i, 0] >= COLLAPSE)
        t99.append(int(hit[0]) if hit.size else None)
    summary = {
        "sizes": sizes, "claims": claims,
        "line": {"p0": np.asarray(p0).tolist(), "r": np.asarray(r).tolist(), "beta": BETA,
                 "E0": e0, "eta": etas.tolist(), "real_fraction": fractions.tolist(),
                 "E_T": g["reward"][..., -1].tolist(), "entropy_T": g["entropy"][..., -1].tolist(),
                 "top_mass_T": g["top"].tolist(), "largest_mass_T": g["pmax"][..., -1].tolist(),
                 "favourite_T": np.argmax(g["final"], axis=-1).tolist(),
                 "last_step_l1": g["last_l1"].tolist(),
                 "boundary_a_c": [None if np.isnan(v) else float(v) for v in line["boundary"]],
                 "boundary_halfwidth": line["boundary_halfwidth"],
                 "t99_a0": t99, "seconds": line["seconds"]},
        "ring": {"num_states": ring["num_states"], "beta": RING_BETA, "E0": ring["E0"],
                 "share0": ring["share0"], "eta": ring["etas"].tolist(),
                 "real_fraction": ring["fractions"].tolist(),
                 "share_T": ring["grid"]["share"].tolist(), "E_T": ring["grid"]["reward"].tolist(),
                 "l1_to_data_T": ring["grid"]["to_data"].tolist(),
                 "last_step_l1": ring["grid"]["last_l1"].tolist(), "seconds": ring["seconds"]},
        "sampled": {"points": check["points"], "targets": check["targets"],
                    "t_bonferroni": check["t_bonferroni"], "se_floor": SE_FLOOR,
                    **{name: {k: v.tolist() for k, v in check[name].items()}
                       for name in ("reward", "pmax")},
                    "same_final_favourite_as_exact": check["same_winner"],
                    "compile_s": check["result"].metadata["compile_seconds"],
                    "run_s": check["result"].metadata["run_seconds"]},
        "wall_seconds": time.perf_counter() - t_start,
        "cpu_seconds": time.process_time() - c_start,
    }
    _cli.write_summary(args.out, summary)

    print(f"\n1-D support: E_T[r] / entropy / top mass after T = {sizes['generations']} "
          f"(E_0 = {e0:.3f})")
    cols = [j for j in range(len(fractions)) if j % max(1, len(fractions) // 5) == 0]
    print(f"{'eta':>5} " + " ".join(f"{'a=' + format(fractions[j], '.3g'):>19}" for j in cols))
    for i in range(len(etas)):
        print(f"{etas[i]:5.2f} " + " ".join(
            f"{g['reward'][i, j, -1]:6.3f}/{g['entropy'][i, j, -1]:5.3f}/{g['top'][i, j]:5.3f}"
            for j in cols))
    print("a_c(eta): " + ", ".join(f"{e:g}: {'-' if np.isnan(b) else format(b, '.4f')}"
                                    for e, b in zip(etas, line["boundary"])))
    print("t_99 at a = 0: " + ", ".join(f"{e:g}: {'-' if t is None else t}"
                                        for e, t in zip(etas, t99)))
    rg = ring["grid"]
    print(f"\nring ({ring['num_states']} cells): mode-0 share at T = {sizes['ring_generations']}")
    print(f"{'eta':>5} " + " ".join(f"{'a=' + format(a, '.3g'):>7}" for a in ring["fractions"]))
    for i, e in enumerate(ring["etas"]):
        print(f"{e:5.2f} " + " ".join(f"{v:7.3f}" for v in rg["share"][i]))
    print(f"\nsampled loop: max |z| over generations, t_Bonferroni = {check['t_bonferroni']:.2f}")
    for j, pt in enumerate(check["points"]):
        print(f"(eta, a) = {tuple(pt)}: E_T exact {check['reward']['exact'][j, -1]:.4f}, sampled "
              f"{check['reward']['mean'][j, -1]:.4f}; max |z| E_t[r] "
              f"{np.max(np.abs(check['reward']['z'][j, 1:])):.2f}, max_x p_t(x) "
              f"{np.max(np.abs(check['pmax']['z'][j, 1:])):.2f}; seeds ending on the exact "
              f"favourite x = {check['targets'][j]}: {check['same_winner'][j]:.2f}")
    return _cli.report(claims, after=f"wall {summary['wall_seconds']:.1f} s, "
                                     f"CPU {summary['cpu_seconds']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
