"""An ecosystem of three models on the 8-mode ring: how far does one model's curation spread?

Three models retrain on each other's curated samples (``sc.ecosystem``, ``sc.theory.ecosystem_*``):
model 0 is curated toward mode 0 (Luce, beta = 2, K = 4, the clipped distance reward on mode 0,
scale 4, flat within 0.1), models 1 and 2 are not curated (beta = 0). Model i refits on
a p_data + (1 - a) sum_j W_ij q_j, where q_j is model j's curated law and the coupling is
W = (1 - c) I + c / M (``sc.ecosystem.coupling``): c = 0 is three independent loops, c = 1 one
shared pool. The mode-0 share of a model is the mass of the states (cells, or samples) whose
nearest ring centre is mode 0; it starts at 1/8.

1. Exact dynamics on the ring's density discretised on a G x G grid over [-1.5, 1.5]^2 with mode
   std max(0.05, 3/G), restricted to the cells within ``cut`` std of a mode centre (as
   ``reward_model_attack.py``; p0 = p_data = the normalised density there, the same for the three
   models). ``sc.theory.ecosystem_trajectory`` for T generations, vmapped over the c grid x the
   real-data fractions a (one compiled program); per model the mode-0 share at every t, and the
   fixed point ``sc.theory.ecosystem_fixed_point`` for every a > 0 (vmapped over c). With a = 0
   there is no fixed point other than collapse: the pi-weighted mixture of the models (pi = 1/3,
   W is doubly stochastic) gains mass on every upper reward level each generation
   (``check_ecosystem``'s ``mixture_monotone``), so for every c > 0 all three models end on mode
   0 and c only sets the speed; we report t_90(c), the first generation at which the uncurated
   models hold 90% on mode 0. ``sc.theory.check_ecosystem`` at c in {0, 1/2, 1} for every a.
2. Self- and cross-influence (the vocabulary of Zhang, Wei, Zhang, ICML 2026, arXiv 2605.29267):
   the change of every model's fixed-point mode-0 share when model 0's curation is switched on
   (beta_0 = 0 -> 2), against c, in two ecosystems: "shared" (the one above: models 1 and 2
   uncurated) and "opposed" (models 1 and 2 curated with beta = 2 toward the opposite mode 4, a
   conflicting preference). The paper reports that cross-model interaction can dampen or even
   invert the effect of curation on alignment; this measures whether either happens here.
3. The sample-based ecosystem (``sc.ecosystem.run``): three 8-component GMMs (10 EM steps per
   refit), each fitted to the same 8,192 ring points with its own key, ``num_samples`` kept samples
   per model and generation, the same curators (``Hyperparams(beta=[2, 0, 0])``), a few c and a,
   ``seeds`` seeds: one compiled ``sc.sweep`` over c x a. The mode-0 share per model is
   ``sc.metrics.mode_shares`` of the generation's fresh candidates (a ``metrics_fn``), compared
   with the exact share at the same generation.

Claims (each checks itself; exit status 1 if one fails): exact: (i) at c = 0 the uncurated
models' share equals its initial value at every t and a (float32 rounding, EQUAL_TOL); (ii) at
c = 1 the three models are equal at every t >= 1 and a; (iii) for every a > 0 the fixed point's
uncurated share rises strictly with c and the curated model's falls strictly with c, the
ecosystem mean (the average over the models) rises strictly with c, and the trajectory has
reached the fixed point's shares at T (within CONVERGED_TOL); (iv) at a = 0 the uncurated share at T is
non-decreasing in c, and t_90 is non-increasing in c where it is reached; (v) every applicable
``check_ecosystem`` fact holds; (vi) influence: switching model 0's curation on never lowers any
model's fixed-point share (no inversion; value: the smallest change), and its self-influence
falls strictly with c in both ecosystems (dampening). GMM: (vii) wherever the exact share at T
changes between consecutive c by more than max(3 SE, DIRECTION_MIN) of the GMM's paired
difference, the GMM seed mean changes in the same direction (curated model, and the mean of the
two uncurated ones); (viii) at c = 0 the uncurated GMMs' share at T differs from their share at
t = 0 by at most max(4 SE, GMM_TOL); at c = 1 the curated GMM's share differs from each uncurated
one's by at most max(4 SE, GMM_TOL); every fit stays finite.

    python experiments/ecosystem.py [--quick] [--out DIR]
"""

from __future__ import annotations

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

STD, NUM_MODES, SCALE, RADIUS = 0.05, 8, 4.0, 0.1
M, K, BETA = 3, 4, 2.0  # three models, K-way Luce; model 0 curated with BETA, the others not
OPPOSED_MODE = 4  # the "opposed" ecosystem: models 1 and 2 curated toward this mode
HI = jax.lax.Precision.HIGHEST
EQUAL_TOL = 1e-5  # claims (i), (ii): float32 rounding of a share
CONVERGED_TOL = 1e-3  # claim (iii): |share at T - share at the fixed point|
DIRECTION_MIN = 0.02  # claim (vii): exact changes smaller than this are not judged
GMM_TOL = 0.02  # claim (viii)
SHARE_GOAL = 0.9  # t_90: the uncurated models hold this share of mode 0
SIZES = {  # full, quick
    "grid": (64, 40),
    "cut": (3.0, 3.0),
    "generations": (100, 60),
    "num_c": (21, 11),  # exact c grid: linspace(0, 1, num_c)
    "fractions": ((0.0, 0.1, 0.3), (0.0, 0.1, 0.3)),
    "check_cs": ((0.0, 0.5, 1.0), (0.0, 0.5, 1.0)),
    "check_generations": (50, 20),
    "gmm_cs": ((0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.5, 1.0)),  # subsets of the exact c grid
    "gmm_fractions": ((0.0, 0.1), (0.0, 0.1)),
    "gmm_generations": (30, 8),
    "seeds": (6, 4),
    "num_samples": (2048, 512),
    "curve_c": (0.5, 0.5),  # the per-generation panel
}


def support(grid, cut):
    """(cells, p0, r (S,), r_opposed (S,), on mode 0 (S,)) on the cells of a grid x grid grid
    over [-1.5, 1.5]^2 within ``cut`` std of a mode centre (mode std max(0.05, 3 / grid))."""
    std = max(STD, 3.0 / grid)
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    cells = sc.models.histogram_centers(grid, -1.5, 1.5, 2)
    d2 = jnp.sum((cells[:, None, :] - centers[None]) ** 2, axis=-1)
    index = np.flatnonzero(np.asarray(jnp.min(d2, axis=1) <= (cut * std) ** 2))
    cells, d2 = cells[index], d2[index]
    p0 = jax.nn.softmax(jax.nn.logsumexp(-0.5 * d2 / std**2, axis=1))
    r = sc.rewards.distance(centers[0], scale=SCALE, radius=RADIUS)(cells)
    r_opp = sc.rewards.distance(centers[OPPOSED_MODE], scale=SCALE, radius=RADIUS)(cells)
    on0 = (jnp.argmin(d2, axis=1) == 0).astype(p0.dtype)
    return cells, p0, r, r_opp, on0


# --------------------------------------------------------------------------------------------
# 1. Exact dynamics
# --------------------------------------------------------------------------------------------


def exact(sizes, p0, r, on0):
    """Shares (c, a, T + 1, M), expected rewards (c, a, T + 1, M) and the L1 change of the last
    step (c, a), one compiled call over the c x a grid."""
    T = sizes["generations"]
    cs = np.linspace(0.0, 1.0, sizes["num_c"])
    fractions = np.asarray(sizes["fractions"])
    ps0 = jnp.broadcast_to(p0, (M, p0.shape[0]))
    betas = jnp.asarray([BETA, 0.0, 0.0], p0.dtype)

    def path(c, a):
        ps = sc.theory.ecosystem_trajectory(ps0, r, num_generations=T,
                                            interaction=sc.ecosystem.coupling(M, c), k=K,
                                            beta=betas, p_data=p0, real_fraction=a)
        return (jnp.matmul(ps, on0, precision=HI), jnp.matmul(ps, r, precision=HI),
                jnp.sum(jnp.abs(ps[-1] - ps[-2])), ps[-1])

    c_grid, a_grid = np.meshgrid(cs, fractions, indexing="ij")
    t0 = time.perf_counter()
    share, rew, change, final = jax.jit(jax.vmap(path))(
        jnp.asarray(c_grid.reshape(-1), jnp.float32), jnp.asarray(a_grid.reshape(-1), jnp.float32))
    shape = c_grid.shape
    out = {"cs": cs, "share": np.asarray(share, np.float64).reshape(shape + (T + 1, M)),
           "reward": np.asarray(rew, np.float64).reshape(shape + (T + 1, M)),
           "last_change": np.asarray(change, np.float64).reshape(shape),
           "final": np.asarray(final).reshape(shape + final.shape[1:]),
           "seconds": time.perf_counter() - t0}
    print(f"exact trajectories: {len(cs)} c x {len(fractions)} a, T = {T} "
          f"({out['seconds']:.1f} s)", flush=True)
    return out


def fixed_points(sizes, p0, r, r_opp, on0):
    """Fixed-point shares per ecosystem ("shared", "opposed"): (beta_0 in {0, BETA}, c, a > 0,
    M), and the shared ecosystem's fixed points (c, a > 0, M, S) at beta_0 = BETA.

    One ``ecosystem_fixed_point`` call per point (compiled once per ecosystem, jit's cache): a
    vmapped while loop would run every point for as many iterations as the slowest one needs
    (from ~100 to ~700 here)."""
    cs = np.linspace(0.0, 1.0, sizes["num_c"])
    positive = np.asarray([a for a in sizes["fractions"] if a > 0])
    table = jnp.stack([r, r_opp], axis=1)
    settings = {"shared": (r, None, (0.0, 0.0)),
                "opposed": (table, (0, 1, 1), (BETA, BETA))}
    out, star_shared = {}, np.zeros((len(cs), len(positive), M, p0.shape[0]), np.float32)
    t0 = time.perf_counter()
    for name, (rewards, columns, rest) in settings.items():
        shares = np.zeros((2, len(cs), len(positive), M))
        for ib, b0 in enumerate((0.0, BETA)):
            betas = jnp.asarray([b0, rest[0], rest[1]], jnp.float32)
            for ic, c in enumerate(cs):
                for ia, a in enumerate(positive):
                    star = sc.theory.ecosystem_fixed_point(
                        p0, rewards, interaction=sc.ecosystem.coupling(M, jnp.float32(c)), k=K,
                        beta=betas, real_fraction=jnp.float32(a), columns=columns)
                    shares[ib, ic, ia] = np.asarray(jnp.matmul(star, on0, precision=HI))
                    if name == "shared" and b0 > 0:
                        star_shared[ic, ia] = np.asarray(star)
        out[name] = shares
    seconds = time.perf_counter() - t0
    print(f"fixed points: 2 ecosystems x 2 beta_0 x {len(cs)} c x {len(positive)} a "
          f"({seconds:.1f} s)", flush=True)
    return positive, out, star_shared, seconds


def checks(sizes, p0, r):
    """sc.theory.check_ecosystem at c in check_cs x every a."""
    rows = []
    ps0 = jnp.broadcast_to(p0, (M, p0.shape[0]))
    for c in sizes["check_cs"]:
        for a in sizes["fractions"]:
            facts = sc.theory.check_ecosystem(
                ps0, r, interaction=sc.ecosystem.coupling(M, float(c)), k=K,
                beta=jnp.asarray([BETA, 0.0, 0.0]), p_data=p0 if a > 0 else None,
                real_fraction=a, num_generations=sizes["check_generations"])
            rows.append({"c": float(c), "real_fraction": float(a), "facts": facts})
    return rows


def first_reach(share, goal):
    """First index along the last axis where ``share >= goal`` (NaN if never)."""
    hit = share >= goal
    return np.where(hit.any(-1), np.argmax(hit, axis=-1).astype(float), np.nan)


# --------------------------------------------------------------------------------------------
# 2. The GMM ecosystem
# --------------------------------------------------------------------------------------------


def gmm_loop(sizes, real):
    """One compiled sc.sweep over c x a: the mode-0 share of every model's fresh candidates per
    generation, (seeds, c, a, T + 1, M)."""
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    reward = sc.rewards.distance(centers[0], scale=SCALE, radius=RADIUS)
    model = sc.models.gmm(8, 2, em_steps=10)
    config = sc.LoopConfig(num_generations=sizes["gmm_generations"],
                           num_samples=sizes["num_samples"], k=K)

    def shares(state, info):  # the candidates are iid draws of the current model
        return {"share0": sc.metrics.mode_shares(info.candidates, centers)[0]}

    def fn(key, c, real_fraction):
        key_init, key_run = jax.random.split(key)
        params0 = jax.vmap(lambda k: model.init(k, real))(jax.random.split(key_init, M))
        hyper = sc.Hyperparams(beta=jnp.asarray([BETA, 0.0, 0.0]), real_fraction=real_fraction)
        _, hist = sc.ecosystem.run(key_run, params0, real, hyper, model=model, reward_fn=reward,
                                   config=config, interaction=sc.ecosystem.coupling(M, c),
                                   metrics_fn=shares, default=False)
        return {"share0": hist["share0"], "finite": jnp.all(hist["fit_is_finite"])}

    grid = {"c": list(sizes["gmm_cs"]), "real_fraction": list(sizes["gmm_fractions"])}
    return sc.sweep(jax.random.key(7), fn, num_seeds=sizes["seeds"], grid=grid)


def nearest(grid, values):
    grid = np.asarray(grid, np.float64)
    return [int(np.argmin(np.abs(grid - v))) for v in values]


def gmm_groups(values):
    """(seeds, ..., M) -> (seeds, ..., 2): the curated model and the mean of the uncurated."""
    return np.stack([values[..., 0], values[..., 1:].mean(-1)], axis=-1)


def paired(diff):
    """Seed mean and standard error of per-seed values (axis 0)."""
    n = diff.shape[0]
    se = diff.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(diff.shape[1:])
    return diff.mean(0), se


# --------------------------------------------------------------------------------------------
# Figure and claims
# --------------------------------------------------------------------------------------------

COLORS = ["tab:red", "tab:blue", "tab:cyan"]
NAMES = ["model 0 (curated)", "model 1 (uncurated)", "model 2 (uncurated)"]


def figure(path, sizes, ex, positive, fps, loop, t90):
    fig = Figure(figsize=(17, 9.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    cs = ex["cs"]
    fractions = list(sizes["fractions"])
    t_gmm = sizes["gmm_generations"]
    gmm_cs = np.asarray(sizes["gmm_cs"])
    share = loop.values["share0"]  # (S, C, A, T + 1, M)

    # (a), (b): exact share at t = T_gmm (lines) and the GMM at T_gmm, per a of the GMM grid
    for j, a in enumerate(sizes["gmm_fractions"]):
        ax = fig.add_subplot(2, 3, j + 1)
        ia = fractions.index(a)
        for i in range(M):
            ax.plot(cs, ex["share"][:, ia, t_gmm, i], color=COLORS[i],
                    linestyle="-" if i < 2 else ":", label=f"{NAMES[i]}, exact")
            mean, low, high = sc.stats.mean_and_interval(share[:, :, j, -1, i])
            shift = (i - 1) * 0.012
            ax.errorbar(gmm_cs + shift, mean, yerr=[mean - low, high - mean], color=COLORS[i],
                        marker="o", markersize=4, linestyle="none", capsize=2,
                        label=f"{NAMES[i].split(' (')[0]}, GMM (95% interval)")
        ax.axhline(1 / NUM_MODES, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("coupling c  (W = (1 - c) I + c/3)")
        ax.set_ylabel("mode-0 share")
        ax.set_title(f"a = {a:g}: after {t_gmm} generations (exact lines, GMM points, "
                     f"{sizes['seeds']} seeds)", fontsize=9)
        ax.set_ylim(0, 1.03)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    # (c) the fixed point for every a > 0, and the ecosystem mean
    ax = fig.add_subplot(2, 3, 3)
    styles = ["-", "--", "-.", ":"]
    for j, a in enumerate(positive):
        st = fps["shared"][1, :, j]  # (c, M)
        ax.plot(cs, st[:, 0], color=COLORS[0], linestyle=styles[j % 4],
                label=f"curated, a = {a:g}")
        ax.plot(cs, st[:, 1], color=COLORS[1], linestyle=styles[j % 4],
                label=f"uncurated, a = {a:g}")
        ax.plot(cs, st.mean(-1), color="black", linestyle=styles[j % 4], linewidth=1,
                label=f"mean of the 3, a = {a:g}")
    ax.axhline(1 / NUM_MODES, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("coupling c")
    ax.set_ylabel("mode-0 share at the fixed point")
    ax.set_title("exact fixed point (ecosystem_fixed_point)", fontsize=9)
    ax.set_ylim(0, 1.03)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)

    # (d) per-generation curves at curve_c
    ax = fig.add_subplot(2, 3, 4)
    ic = int(np.argmin(np.abs(cs - sizes["curve_c"])))
    jc = int(np.argmin(np.abs(gmm_cs - sizes["curve_c"])))
    t_ex = np.arange(sizes["generations"] + 1)
    t_g = np.arange(t_gmm + 1)
    for j, a in enumerate(sizes["gmm_fractions"]):
        ia = fractions.index(a)
        for i in range(M):
            if i == 2:
                continue
            ls = "-" if j == 0 else "--"
            ax.plot(t_ex[:t_gmm * 2 + 1], ex["share"][ic, ia, :t_gmm * 2 + 1, i],
                    color=COLORS[i], linestyle=ls,
                    label=f"{NAMES[i].split(' (')[0]}, a = {a:g}, exact")
            mean, low, high = sc.stats.mean_and_interval(share[:, jc, j, :, i])
            ax.fill_between(t_g, low, high, color=COLORS[i], alpha=0.25)
            ax.plot(t_g, mean, color=COLORS[i], linestyle="none", marker="o" if j == 0 else "s",
                    markersize=3, label=f"GMM, a = {a:g}")
    ax.set_xlabel("generation t")
    ax.set_ylabel("mode-0 share")
    ax.set_title(f"c = {cs[ic]:g}: per generation (model 2 as model 1)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)

    # (e) a = 0: t_90 against c
    ax = fig.add_subplot(2, 3, 5)
    ax.plot(cs, t90, marker="o", markersize=3, color=COLORS[1])
    ax.set_xlabel("coupling c")
    ax.set_ylabel(f"t_90: first t with uncurated share >= {SHARE_GOAL:g}")
    ax.set_yscale("log")
    ax.set_title(f"a = 0: every model collapses onto mode 0; c sets the speed "
                 f"(T = {sizes['generations']})", fontsize=9)
    ax.grid(alpha=0.3, which="both")

    # (f) influence of switching model 0's curation on
    ax = fig.add_subplot(2, 3, 6)
    for name, ls in (("shared", "-"), ("opposed", "--")):
        for j, a in enumerate(positive):
            infl = fps[name][1, :, j] - fps[name][0, :, j]
            lw = 1.5 if j == 0 else 0.8
            ax.plot(cs, infl[:, 0], color=COLORS[0], linestyle=ls, linewidth=lw,
                    label=f"self, {name}, a = {a:g}")
            ax.plot(cs, infl[:, 1], color=COLORS[1], linestyle=ls, linewidth=lw,
                    label=f"cross, {name}, a = {a:g}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("coupling c")
    ax.set_ylabel("fixed-point share(beta_0 = 2) - share(beta_0 = 0)")
    ax.set_title("influence of model 0's curation (opposed: models 1, 2 curated to mode 4)",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.suptitle("three models on the 8-mode ring, model 0 curated toward mode 0 (Luce beta = 2, "
                 "K = 4), models 1 and 2 uncurated, coupled by W = (1 - c) I + c/3")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def claims_of(sizes, ex, positive, fps, stars_ok, rows, loop, t90):
    claims = []

    def claim(description, value, holds):
        claims.append({"description": description, "value": value, "holds": bool(holds)})

    cs = ex["cs"]
    fractions = list(sizes["fractions"])
    share = ex["share"]  # (c, a, T + 1, M)
    dev = float(np.max(np.abs(share[0, :, :, 1:] - share[0, :, :1, 1:])))
    claim(f"(i) exact, c = 0: the uncurated models' mode-0 share equals its initial value at "
          f"every t and a (value: max deviation, tolerance {EQUAL_TOL:g})", dev, dev <= EQUAL_TOL)
    dev = float(np.max(np.abs(share[-1, :, 1:, :] - share[-1, :, 1:, :1])))
    claim(f"(ii) exact, c = 1: the three models' shares are equal at every t >= 1 and a "
          f"(value: max difference, tolerance {EQUAL_TOL:g})", dev, dev <= EQUAL_TOL)
    for j, a in enumerate(positive):
        st = fps["shared"][1, :, j]  # (c, M)
        d_un, d_cur, d_mean = np.diff(st[:, 1]), np.diff(st[:, 0]), np.diff(st.mean(-1))
        claim(f"(iii) exact fixed point, a = {a:g}: the uncurated share rises strictly with c, the "
              f"curated share falls strictly, the ecosystem mean rises strictly (value: "
              f"[smallest rise, largest curated step, smallest mean rise])",
              [float(d_un.min()), float(d_cur.max()), float(d_mean.min())],
              d_un.min() > 0 and d_cur.max() < 0 and d_mean.min() > 0)
    ia = [fractions.index(a) for a in positive]
    dist = float(np.max(np.abs(share[:, ia, -1] - fps["shared"][1])))
    claim(f"(iii) exact: every model's share at T = {sizes['generations']} equals its fixed-point "
          f"share within {CONVERGED_TOL:g}, for every c and a > 0 (value: the largest difference; "
          f"the L1 distance of the whole laws, {float(np.max(stars_ok)):.2g}, is larger: the shape "
          f"inside mode 0 converges slowly)", dist, dist <= CONVERGED_TOL)
    a0 = fractions.index(0.0)
    d = np.diff(share[:, a0, -1, 1])
    finite = t90[np.isfinite(t90)]
    claim("(iv) exact, a = 0: the uncurated share at T is non-decreasing in c, and t_90 is "
          "non-increasing in c where reached (value: [smallest step of the share, largest step "
          "of t_90, number of c with t_90 reached])",
          [float(d.min()), float(np.max(np.diff(finite))) if finite.size > 1 else 0.0,
           int(finite.size)],
          d.min() >= -EQUAL_TOL and (finite.size < 2 or np.max(np.diff(finite)) <= 0))
    failing = [f"{n} at c={r['c']:g}, a={r['real_fraction']:g}" for r in rows
               for n, f in r["facts"].items() if f["applicable"] and not f["holds"]]
    applied = sum(f["applicable"] for r in rows for f in r["facts"].values())
    claim(f"(v) sc.theory.check_ecosystem at c in {list(sizes['check_cs'])} x a in {fractions}: "
          f"every applicable fact holds ({applied} checked; value: the failures)", failing,
          not failing and applied > 0)
    low, damp = [], []
    for name in ("shared", "opposed"):
        infl = fps[name][1] - fps[name][0]  # (c, a, M)
        low.append(float(infl.min()))
        damp.append(float(np.max(np.diff(infl[:, :, 0], axis=0))))
    claim("(vi) influence: switching model 0's curation on (beta_0 = 0 -> 2) never lowers a "
          "model's fixed-point share, in either ecosystem, at any c and a > 0 (no inversion; "
          "value: the smallest change per ecosystem [shared, opposed])", low, min(low) >= -EQUAL_TOL)
    claim("(vi) influence: the self-influence on model 0 falls strictly with c in both ecosystems "
          "(dampening; value: the largest step along c per ecosystem)", damp, max(damp) < 0)
    # GMM
    gmm_cs = list(sizes["gmm_cs"])
    t_gmm = sizes["gmm_generations"]
    ic = nearest(cs, gmm_cs)
    ia = [fractions.index(a) for a in sizes["gmm_fractions"]]
    g = gmm_groups(loop.values["share0"][..., -1, :])  # (S, C, A, 2)
    e = gmm_groups(share[ic][:, ia, t_gmm, :])  # (C, A, 2)
    mean, se = paired(np.diff(g, axis=1))
    d_e = np.diff(e, axis=0)
    decisive = np.abs(d_e) > np.maximum(3 * se, DIRECTION_MIN)
    wrong = decisive & (np.sign(mean) != np.sign(d_e))
    claim(f"(vii) GMM: between consecutive c, the seed mean of the share at T = {t_gmm} moves in "
          f"the direction of the exact share wherever the exact change exceeds max(3 SE, "
          f"{DIRECTION_MIN:g}) (curated model and uncurated mean, every a; {int(decisive.sum())} "
          f"of {decisive.size} pairs judged; value: disagreements)", int(wrong.sum()),
          not wrong.any() and decisive.sum() > 0)
    s = loop.values["share0"]  # (S, C, A, T + 1, M)
    j0, j1 = gmm_cs.index(0.0), gmm_cs.index(1.0)
    # at c = 0 models 1 and 2 are independent loops: 2 x seeds independent draws
    moved = (s[:, j0, :, -1, 1:] - s[:, j0, :, 0, 1:]).transpose(0, 2, 1).reshape(-1, s.shape[2])
    m, e_ = paired(moved)  # (A,)
    tol = np.maximum(4 * e_, GMM_TOL)
    claim(f"(viii) GMM, c = 0: the uncurated models' share at T differs from their share at t = 0 "
          f"by at most max(4 SE, {GMM_TOL:g}) for every a: no systematic drift (value: the mean "
          f"change per a over seeds x models 1, 2, and its SE)", [m.tolist(), e_.tolist()],
          bool(np.all(np.abs(m) <= tol)))
    gaps = s[:, j1, :, -1, :1] - s[:, j1, :, -1, 1:]  # (S, A, 2)
    m, e_ = paired(gaps)
    tol = np.maximum(4 * e_, GMM_TOL)
    claim(f"(viii) GMM, c = 1: the curated model's share at T differs from each uncurated one's by "
          f"at most max(4 SE, {GMM_TOL:g}) for every a (value: the seed-mean gaps)",
          m.tolist(), bool(np.all(np.abs(m) <= tol)))
    finite = bool(np.all(loop.values["finite"]))
    claim("(viii) GMM: every fit stayed finite", finite, finite)
    return claims


def main(argv=None) -> int:
    args, sizes = _cli.setup(__doc__, "ecosystem", "a coarser support, a smaller GMM sweep", SIZES, argv)
    t_start, c_start = time.perf_counter(), time.process_time()
    _, p0, r, r_opp, on0 = support(sizes["grid"], sizes["cut"])
    print(f"support: {p0.shape[0]} states, mode-0 share {float(p0 @ on0):.4f}, "
          f"E_0[r] = {float(p0 @ r):.3f}", flush=True)

    ex = exact(sizes, p0, r, on0)
    positive, fps, star_shared, fp_seconds = fixed_points(sizes, p0, r, r_opp, on0)
    fractions = list(sizes["fractions"])
    ia = [fractions.index(a) for a in positive]
    stars_ok = np.sum(np.abs(ex["final"][:, ia] - star_shared), axis=(-2, -1))  # (c, a > 0)
    t0 = time.perf_counter()
    rows = checks(sizes, p0, r)
    check_seconds = time.perf_counter() - t0
    print(f"check_ecosystem at {len(rows)} points ({check_seconds:.1f} s)", flush=True)
    t90 = first_reach(ex["share"][:, fractions.index(0.0), :, 1:].mean(-1), SHARE_GOAL)

    real, _ = sc.data.gaussian_ring(jax.random.key(0), 8192, std=STD)
    loop = gmm_loop(sizes, real)
    loop.save(args.out, name="gmm")
    print(f"GMM sweep: compile {loop.metadata['compile_seconds']:.1f} s, run "
          f"{loop.metadata['run_seconds']:.1f} s", flush=True)

    figure(os.path.join(args.out, "ecosystem.png"), sizes, ex, positive, fps, loop, t90)
    claims = claims_of(sizes, ex, positive, fps, stars_ok, rows, loop, t90)

    cs = ex["cs"]
    gmm_cs = list(sizes["gmm_cs"])
    t_gmm = sizes["gmm_generations"]
    s = loop.values["share0"]
    ic = nearest(cs, gmm_cs)
    summary = {
        "sizes": sizes, "claims": claims, "num_states": int(p0.shape[0]),
        "initial_share": float(p0 @ on0), "E0": float(p0 @ r), "c": cs.tolist(),
        "exact": {
            "share_T": {str(a): ex["share"][:, j, -1].tolist() for j, a in enumerate(fractions)},
            "share_at_gmm_T": {str(a): ex["share"][:, j, t_gmm].tolist()
                               for j, a in enumerate(fractions)},
            "reward_T": {str(a): ex["reward"][:, j, -1].tolist()
                         for j, a in enumerate(fractions)},
            "last_step_l1": {str(a): ex["last_change"][:, j].tolist()
                             for j, a in enumerate(fractions)},
            "t90_a0": [None if np.isnan(v) else int(v) for v in t90],
            "fixed_point_share": {name: {str(a): v[1, :, j].tolist()
                                         for j, a in enumerate(positive)}
                                  for name, v in fps.items()},
            "fixed_point_share_beta0_zero": {name: {str(a): v[0, :, j].tolist()
                                                          for j, a in enumerate(positive)}
                                                   for name, v in fps.items()},
            "influence": {name: {str(a): (v[1, :, j] - v[0, :, j]).tolist()
                                 for j, a in enumerate(positive)} for name, v in fps.items()},
            "trajectory_to_fixed_point_l1": {str(a): stars_ok[:, j].tolist()
                                             for j, a in enumerate(positive)},
            "seconds": ex["seconds"], "fixed_point_seconds": fp_seconds},
        "check_ecosystem": {"seconds": check_seconds, "rows": [
            {"c": row["c"], "real_fraction": row["real_fraction"],
             "facts": {n: {"holds": f["holds"], "slack": f["slack"]}
                       for n, f in row["facts"].items()}} for row in rows]},
        "gmm": {"c": gmm_cs, "real_fraction": list(sizes["gmm_fractions"]),
                "share_T_mean": s[..., -1, :].mean(0).tolist(),
                "share_T_se": (s[..., -1, :].std(0, ddof=1) / np.sqrt(s.shape[0])).tolist()
                if s.shape[0] > 1 else None,
                "share_0_mean": s[..., 0, :].mean(0).tolist(),
                "max_abs_dev_from_exact": float(np.max(np.abs(
                    s[..., -1, :].mean(0) - ex["share"][ic][:, [fractions.index(a) for a in
                                                               sizes["gmm_fractions"]], t_gmm]))),
                "compile_s": loop.metadata["compile_seconds"],
                "run_s": loop.metadata["run_seconds"]},
        "wall_seconds": time.perf_counter() - t_start,
        "cpu_seconds": time.process_time() - c_start,
    }
    _cli.write_summary(args.out, summary)

    print(f"\nexact mode-0 share at T = {sizes['generations']} [curated, uncurated] "
          f"(fixed point for a > 0)")
    print(f"{'c':>5} " + " ".join(f"{'a=' + format(a, 'g'):>15}" for a in fractions)
          + " " + " ".join(f"{'fp a=' + format(a, 'g'):>15}" for a in positive))
    for i, c in enumerate(cs):
        cells = [f"{ex['share'][i, j, -1, 0]:.3f}/{ex['share'][i, j, -1, 1]:.3f}"
                 for j in range(len(fractions))]
        cells += [f"{fps['shared'][1, i, j, 0]:.3f}/{fps['shared'][1, i, j, 1]:.3f}"
                  for j in range(len(positive))]
        print(f"{c:5.2f} " + " ".join(f"{x:>15}" for x in cells))
    print("t_90 at a = 0: " + ", ".join(f"c={c:g}: {'-' if np.isnan(v) else int(v)}"
                                        for c, v in zip(cs, t90)))
    for name in fps:
        infl = fps[name][1] - fps[name][0]
        print(f"influence ({name}), c = 0 / 0.5 / 1, a = {positive[0]:g}: self "
              + " / ".join(f"{infl[i, 0, 0]:.3f}" for i in nearest(cs, [0, 0.5, 1]))
              + ", cross " + " / ".join(f"{infl[i, 0, 1]:.3f}" for i in nearest(cs, [0, 0.5, 1])))
    print(f"\nGMM: mode-0 share at T = {t_gmm} [curated, model 1, model 2], seed mean "
          f"({sizes['seeds']} seeds) | exact")
    for jc, c in enumerate(gmm_cs):
        for ja, a in enumerate(sizes["gmm_fractions"]):
            m = s[:, jc, ja, -1].mean(0)
            e = ex["share"][ic[jc], fractions.index(a), t_gmm]
            print(f"c={c:4.2f} a={a:3.1f}: " + " ".join(f"{v:.3f}" for v in m) + " | "
                  + " ".join(f"{v:.3f}" for v in e))
    return _cli.report(claims, after=f"wall {summary['wall_seconds']:.1f} s, "
                                     f"CPU {summary['cpu_seconds']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
