"""Poisoned reward models: the curator is learned from comparisons, and an attacker flips labels.

After Wei & Zhang (ICML 2025, "Self-consuming generative models with adversarially curated
data"). Each generation the curator's reward is refitted by Bradley-Terry from pairwise
comparisons of the current model's samples, labelled by a judge on the true reward (Luce,
beta = 1: ``sc.curators.luce(1.0)``); an attacker flips a budget eps of the labels, chosen at
random (``flip="random"``), the largest true-reward margins first (``"margin"``) or by Wei &
Zhang's first-order influence score (``"influence"``). The generated candidates are then curated
K-way (K = 4, Luce with beta = 1) on the learned reward and the model is refitted on the kept
samples (and a real-data fraction a). Setting: the 8-mode ring with the clipped distance reward
on mode 0 (scale 4, flat within 0.1), as ``adversarial_curation.py``.

1. Exact dynamics (``sc.theory.reward_model_trajectory``: infinitely many comparisons, the
   tabular reward fitted by ``sc.reward_models.population_fit``) on the ring discretised on a
   G x G grid over [-1.5, 1.5]^2 with mode std max(0.05, 3/G) (as ``exact_dynamics.py``),
   restricted to the cells within ``cut`` std of a mode centre (p0 = p_data = the normalised
   density there; M states). Ridge ``L2 = 1e-6`` (the default 1e-3 is a strong prior on a
   normalised likelihood over M ~ 100 states: even clean labels then give a reward that is not
   monotone in r; measured and reported). Random vs margin flips, eps on a grid over [0, 0.6],
   real-data fraction a in {0, 0.1, 0.3}, T generations: one compiled call per flip rule
   vmapped over eps x a (the feedback is built inside: eps is a traced leaf). The budget
   eps_T(a) beyond which the reward no longer rises (E_T - E_0 <= RISE_TOL) is bracketed on
   the grid and bisected, and so is the one-step budget eps_1 (E_1 - E_0 = (1 - a) x the
   change of the curated law, so eps_1 does not depend on a). Random flips at rate eps turn the judge's preference P(x > y) into
   eps + (1 - 2 eps) P(x > y), still increasing in r(x) - r(y) for eps < 1/2; without a ridge the
   fit's stationarity condition sum_y p_y sigma(u_x - u_y) = sum_y p_y q_xy then makes u
   increasing in r (a shrunk, not rescaled, copy of r), and at eps = 1/2 the labels carry
   nothing (u = 0, the law stays p0). Margin flips reverse the most confident labels first.
2. Sampled loop: an 8-component GMM (10 EM steps per refit) fitted to 8,192 ring points, a
   learned reward linear in Gaussian radial features on the 8 mode centres (bandwidth 0.25),
   refitted from ``gmm_comparisons`` fresh pairs per generation; random vs margin vs influence
   flips at a few budgets, no real data, ``gmm_seeds`` seeds: one compiled ``sc.sweep`` over eps
   per flip rule. The true reward of the fresh candidates per generation (``true_reward_mean``).
3. Sample size: the categorical model with the tabular reward model (the same ridge) on the
   support of part 1 at G = ``ss_grid``, ``ss_cut`` (the quick support, in both modes: the
   tabular fit's Hessian is built by autodiff, so a generation costs about M x N), the loop with
   N pairs per generation (``ss_samples`` kept samples, no real data), clean and margin-flipped
   at eps = 0.1, ``ss_seeds`` seeds (vmapped by ``sc.sweep``, one compile per N), against the
   infinite-comparison theory: the seed mean of the exact ``expected_reward`` per generation,
   its distance z from the theory in standard errors of the mean (floored at SE_FLOOR, the
   theory's float32 accuracy, for generations where every seed has reached the same value); N*
   is reported for the 2-SE and the Bonferroni thresholds (an unbiased loop crosses 2 SE at one
   of T independent generations with probability 1 - 0.936^T under Student's t with 15 degrees
   of freedom: 0.33 at T = 6).

Claims (each checks itself; exit status 1 if one fails): exact: (i) at eps = 0 the trajectory
equals ``sc.theory.trajectory`` with the true reward within EXACT_TOL (the learned reward is r up
to a constant and the ridge's shrinkage), and the reward rises for every a; (ii) random flips: the reward rises at
every grid eps < 1/2 and every a, eps_T(a) = 1/2 (within BOUNDARY_TOL), the learned reward at
p0 has no discordant pair (r_x > r_y, u_x < u_y) at eps <= 0.4, and along every random-flip
trajectory with eps < 1/2 the discordant share of the pair mass p_t(x) p_t(y) stays below
DISC_TOL; (iii) margin flips: eps_T(a) is more than 0.05 below the random-flip eps_T(a) for every
a (the rise stops at a smaller budget), and at eps = 0.4 more than half of the pair mass at p0 is
discordant; (iv) real data at
eps = 0.4: under margin flips E_T rises with a but stays below E_0 (real data limits the fall,
it does not restore the rise); under random flips E_T falls with a and stays above E_0;
(v) with the default ridge 1e-3 the clean fit is not monotone in r. GMM loop: (vi) the reward
rises for every seed at eps = 0 and under random flips at every budget; at the largest budget
margin and influence flips make it fall for every seed; at every budget > 0 every random-flip
seed ends above every margin- and influence-flip seed. Sample size: (vii) at the smallest N the
clean loop lags the theory by more than the Bonferroni t quantile (family level 5% over the
generations) standard errors at some generation; at the largest N every generation is within
it, clean and attacked.

    python experiments/reward_model_attack.py [--quick] [--out DIR]
"""

from __future__ import annotations

import json
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

STD, NUM_MODES, SCALE, RADIUS = 0.05, 8, 4.0, 0.1
BETA, JUDGE_BETA, K = 1.0, 1.0, 4  # curation (K-way Luce on the learned reward) and the judge
L2 = 1e-6  # ridge of the tabular reward model (parts 1 and 3)
DEFAULT_L2 = 1e-3  # the toolkit's default, checked in claim (v)
BANDWIDTH = 0.25  # radial features of the GMM part's reward model
EXACT_FLIPS = ("random", "margin")
GMM_FLIPS = ("random", "margin", "influence")
SS_FLIP, SS_EPS = "margin", (0.0, 0.1)  # part 3: clean and margin-flipped
REAL_EPS = 0.4  # the budget at which the effect of real data is reported
RISE_TOL = 1e-4  # "rises": E_T - E_0 > RISE_TOL
EXACT_TOL = 0.01  # claim (i): |E_t(learned, eps = 0) - E_t(true reward)|
BOUNDARY_TOL = 0.01  # claim (ii): |eps_T(a) - 1/2| for random flips
DISC_TOL = 1e-3  # claim (ii): discordant share of the pair mass along random-flip trajectories
R_TIE = 1e-6  # pairs with |r_x - r_y| <= R_TIE are ties (not ordered)
SE_FLOOR = 1e-3  # part 3: standard errors below this are floored (float32 theory)
FAMILY_LEVEL = 0.05  # part 3: Bonferroni over the generations
SIZES = {  # full, quick
    "grid": (40, 24),
    "cut": (2.5, 1.5),  # support: cells within cut x std of a mode centre
    "generations": (20, 10),
    "eps": (tuple(round(0.05 * i, 2) for i in range(13)),
            (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)),
    "fractions": ((0.0, 0.1, 0.3), (0.0, 0.1, 0.3)),
    "bisection_steps": (10, 7),
    "gmm_eps": ((0.0, 0.1, 0.2, 0.3), (0.0, 0.1, 0.3)),
    "gmm_generations": (10, 6),
    "gmm_seeds": (8, 4),
    "gmm_samples": (2048, 512),
    "gmm_comparisons": (1024, 512),
    "ss_grid": (24, 24),  # part 3's support (its cost grows like M x N)
    "ss_cut": (1.5, 1.5),
    "ss_comparisons": ((64, 256, 1024, 4096, 16384), (64, 4096)),
    "ss_generations": (6, 5),
    "ss_seeds": (16, 16),
    "ss_samples": (4096, 4096),
}


def support(grid, cut, reward):
    """(cells, p0, r) on the cells of a grid x grid grid over [-1.5, 1.5]^2 within ``cut`` std
    of a mode centre (mode std max(0.05, 3 / grid), as exact_dynamics.py)."""
    std = max(STD, 3.0 / grid)
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    cells = sc.models.histogram_centers(grid, -1.5, 1.5, 2)
    d2 = jnp.sum((cells[:, None, :] - centers[None]) ** 2, axis=-1)
    index = np.flatnonzero(np.asarray(jnp.min(d2, axis=1) <= (cut * std) ** 2))
    p0 = jax.nn.softmax(jax.nn.logsumexp(-0.5 * d2[index] / std**2, axis=1))
    return cells[index], p0, reward(cells[index])


def judge_feedback(eps, flip, num_comparisons=1024):
    return sc.reward_models.feedback(num_comparisons, k=2, judge=sc.curators.luce(JUDGE_BETA),
                                     eps=eps, flip=flip)


def discordance(u, p, r):
    """(share of the pair mass p_x p_y over ordered pairs r_x > r_y with u_x < u_y, number of
    such pairs among all states)."""
    ordered = (r[:, None] - r[None, :]) > R_TIE
    bad = ordered & (u[:, None] < u[None, :])
    w = p[:, None] * p[None, :]
    total = jnp.sum(jnp.where(ordered, w, 0.0))
    share = jnp.sum(jnp.where(bad, w, 0.0)) / jnp.where(total > 0, total, 1.0)
    return share, jnp.sum(bad)


# --------------------------------------------------------------------------------------------
# 1. Exact dynamics
# --------------------------------------------------------------------------------------------


def exact(sizes, p0, r):
    """Per flip rule: E_t[r] (eps, a, T + 1), the discordance along the trajectories, the learned
    reward at p0 per eps, and the bisected boundary eps_T(a)."""
    T = sizes["generations"]
    rm = sc.reward_models.tabular(p0.shape[0], l2=L2)
    eps = np.asarray(sizes["eps"], np.float64)
    fractions = np.asarray(sizes["fractions"], np.float64)
    e_grid, a_grid = np.meshgrid(eps, fractions, indexing="ij")
    out = {}
    for flip in EXACT_FLIPS:
        t0 = time.perf_counter()

        def path(e, a, flip=flip):
            ps, us = sc.theory.reward_model_trajectory(
                p0, r, num_generations=T, k=K, reward_model=rm, feedback=judge_feedback(e, flip),
                beta=BETA, p_data=p0, real_fraction=a)
            share, count = jax.vmap(lambda u, p: discordance(u, p, r))(us, ps)
            return (jnp.matmul(ps, r, precision=jax.lax.Precision.HIGHEST), share, count[0],
                    us[0])

        paths = jax.jit(jax.vmap(path))

        def run(e_points, a_points, paths=paths):
            rew, share, count, u0 = paths(jnp.asarray(e_points.reshape(-1), jnp.float32),
                                          jnp.asarray(a_points.reshape(-1), jnp.float32))
            shape = e_points.shape
            return (np.asarray(rew, np.float64).reshape(shape + (T + 1,)),
                    np.asarray(share, np.float64).reshape(shape + (T + 1,)),
                    np.asarray(count).reshape(shape), np.asarray(u0).reshape(shape + (-1,)))

        rew, share, count, u0 = run(e_grid, a_grid)
        change = rew[..., -1] - rew[..., 0]  # (eps, a)
        # bisect where E_T - E_0 and the one-step E_1 - E_0 stop exceeding RISE_TOL, both in one
        # batch per step (rows: the T-step boundary per a, then the one-step boundary per a)
        steps = np.stack([change, rew[..., 1] - rew[..., 0]], axis=-1)  # (eps, a, 2)
        rises = steps > RISE_TOL
        first = np.where((~rises).any(axis=0), np.argmax(~rises, axis=0), len(eps) - 1)
        lo, hi = eps[np.maximum(first - 1, 0)], eps[first]  # (a, 2)
        a_pair = np.stack([fractions, fractions], axis=-1)
        for _ in range(sizes["bisection_steps"]):
            mid = 0.5 * (lo + hi)
            r_mid = run(mid, a_pair)[0]
            up = np.stack([r_mid[:, 0, -1] - r_mid[:, 0, 0],
                           r_mid[:, 1, 1] - r_mid[:, 1, 0]], axis=-1) > RISE_TOL
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        rises = rises[..., 0]
        out[flip] = {"reward": rew, "change": change, "share": share, "count_p0": count[:, 0],
                     "u0": u0[:, 0], "boundary": 0.5 * (lo[:, 0] + hi[:, 0]),
                     "one_step_boundary": 0.5 * (lo[:, 1] + hi[:, 1]),
                     "boundary_halfwidth": float(np.max(hi - lo)) / 2,
                     "crossings": [int(np.sum(np.diff(rises[:, j].astype(int)) != 0))
                                   for j in range(len(fractions))],
                     "seconds": time.perf_counter() - t0}
        print(f"exact {flip}: eps_T(a) = "
              + ", ".join(f"{b:.4f} (a={a:g})" for a, b in zip(fractions, out[flip]["boundary"]))
              + "; one step: " + ", ".join(f"{b:.4f}" for b in out[flip]["one_step_boundary"])
              + f" ({out[flip]['seconds']:.1f} s)", flush=True)
    # the learned reward with the true reward as reference, and the default ridge
    known = jax.jit(jax.vmap(lambda a: jnp.matmul(
        sc.theory.trajectory(p0, r, num_generations=T, k=K, beta=BETA, p_data=p0,
                             real_fraction=a), r, precision=jax.lax.Precision.HIGHEST)))
    true_reward = np.asarray(known(jnp.asarray(fractions, jnp.float32)), np.float64)
    default = sc.reward_models.tabular(p0.shape[0], l2=DEFAULT_L2)
    u_default = sc.reward_models.population_fit(p0, r, reward_model=default,
                                                feedback=judge_feedback(0.0, "random"))
    share_d, count_d = discordance(u_default, p0, r)
    rr, ud, u_clean = np.asarray(r, np.float64), np.asarray(u_default, np.float64), \
        out["random"]["u0"][0]
    ridge = {"default_l2": DEFAULT_L2, "default_discordant_pairs": int(count_d),
             "default_discordant_share": float(share_d),
             "default_slope": float(np.polyfit(rr, ud, 1)[0]),
             "l2": L2, "slope": float(np.polyfit(rr, u_clean, 1)[0]),
             "max_abs_u_minus_r": float(np.max(np.abs(u_clean - rr - np.mean(u_clean - rr))))}
    return eps, out, true_reward, ridge


# --------------------------------------------------------------------------------------------
# 2. The GMM loop with a learned linear reward
# --------------------------------------------------------------------------------------------


def gmm_loop(sizes, reward, real, flip):
    """One compiled sc.sweep over eps: the true reward of the fresh candidates per generation."""
    model = sc.models.gmm(8, 2, em_steps=10)
    rm = sc.reward_models.linear(sc.reward_models.radial(
        np.asarray(sc.data.ring_centers(NUM_MODES, 1.0)), BANDWIDTH))
    config = sc.LoopConfig(num_generations=sizes["gmm_generations"],
                           num_samples=sizes["gmm_samples"], k=K)

    def fn(key, eps):
        key_init, key_run = jax.random.split(key)
        params0 = model.init(key_init, real)
        fb = judge_feedback(eps, flip, sizes["gmm_comparisons"])
        _, hist = sc.run(key_run, params0, None, sc.Hyperparams(beta=BETA), model=model,
                         reward_fn=reward, config=config, reward_model=rm, feedback=fb)
        return {"reward": hist["true_reward_mean"], "proxy": hist["proxy_reward_mean"],
                "accuracy": hist["reward_model_accuracy"],
                "finite": jnp.all(hist["fit_is_finite"])}

    return sc.sweep(jax.random.key(7), fn, num_seeds=sizes["gmm_seeds"],
                    grid={"eps": list(sizes["gmm_eps"])})


# --------------------------------------------------------------------------------------------
# 3. Sample size: the categorical loop against the infinite-comparison theory
# --------------------------------------------------------------------------------------------


def sample_size(sizes, p0, r):
    M = p0.shape[0]
    T = sizes["ss_generations"]
    rm = sc.reward_models.tabular(M, l2=L2)
    model = sc.models.categorical(M)
    params0 = model.init(jax.random.key(0), jnp.arange(M, dtype=jnp.int32), p0)
    table = jnp.asarray(r)
    reward_fn = lambda x: table[x]
    config = sc.LoopConfig(num_generations=T, num_samples=sizes["ss_samples"], k=K)
    theory = np.stack([np.asarray(jnp.matmul(sc.theory.reward_model_trajectory(
        p0, r, num_generations=T, k=K, reward_model=rm, feedback=judge_feedback(e, SS_FLIP),
        beta=BETA)[0], r, precision=jax.lax.Precision.HIGHEST), np.float64) for e in SS_EPS])
    runs = {}
    for n in sizes["ss_comparisons"]:
        def fn(key, eps, n=n):
            _, hist = sc.run(key, params0, None, sc.Hyperparams(beta=BETA), model=model,
                             reward_fn=reward_fn, config=config, reward_model=rm,
                             feedback=judge_feedback(eps, SS_FLIP, n))
            return {"expected_reward": hist["expected_reward"],
                    "accuracy": hist["reward_model_accuracy"],
                    "finite": jnp.all(hist["fit_is_finite"])}

        runs[n] = sc.sweep(jax.random.key(11), fn, num_seeds=sizes["ss_seeds"],
                           grid={"eps": list(SS_EPS)})
        print(f"sample size N = {n}: compile {runs[n].metadata['compile_seconds']:.1f} s, run "
              f"{runs[n].metadata['run_seconds']:.1f} s", flush=True)
    seeds = sizes["ss_seeds"]
    values = np.stack([runs[n].values["expected_reward"] for n in sizes["ss_comparisons"]])
    mean = values.mean(1)  # (N, eps, T + 1)
    se = values.std(1, ddof=1) / math.sqrt(seeds)
    z = (mean - theory[None]) / np.maximum(se, SE_FLOOR)
    level = 1 - FAMILY_LEVEL / T  # Bonferroni over generations 1..T
    t_bonf = t_quantile(level, seeds)
    return {"theory": theory, "mean": mean, "se": se, "z": z, "t_bonferroni": t_bonf,
            "level": level, "values": values,
            "accuracy": np.stack([runs[n].values["accuracy"].mean(0)
                                  for n in sizes["ss_comparisons"]]),
            "finite": all(bool(np.all(runs[n].values["finite"])) for n in runs),
            "seconds": {n: (runs[n].metadata["compile_seconds"], runs[n].metadata["run_seconds"])
                        for n in runs}}


def t_quantile(level, num_seeds):
    """The two-sided Student-t quantile t_{(1+level)/2, S-1} that sc.stats.mean_and_interval
    uses (read off an interval of a sample with unit standard deviation)."""
    x = np.arange(num_seeds, dtype=np.float64)
    x = x / x.std(ddof=1)
    mean, _, high = sc.stats.mean_and_interval(x, level=level)
    return float((high - mean) * math.sqrt(num_seeds))


def smallest_within(ns, max_abs_z, bound):
    """The smallest N from which on every larger N of the grid has max |z| <= bound (None if the
    largest does not), and the smallest N that does itself."""
    ok = max_abs_z <= bound
    tail = None
    for i in range(len(ns) - 1, -1, -1):
        if not ok[i]:
            break
        tail = ns[i]
    first = next((n for n, o in zip(ns, ok) if o), None)
    return tail, first


# --------------------------------------------------------------------------------------------
# Figure, claims, main
# --------------------------------------------------------------------------------------------


def figure(path, sizes, eps, ex, true_reward, r, loops, ss):
    T = sizes["generations"]
    fractions = np.asarray(sizes["fractions"])
    fig = Figure(figsize=(20, 9.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    shown = [e for e in (0.0, 0.1, 0.2, 0.3, 0.4) if np.any(np.isclose(eps, e))]
    colors = {e: c for e, c in zip(shown, ["black", "tab:blue", "tab:green", "tab:orange",
                                           "tab:red"])}
    for col, flip in enumerate(EXACT_FLIPS):
        ax = fig.add_subplot(2, 4, col + 1)
        for e in shown:
            i = int(np.argmin(np.abs(eps - e)))
            ax.plot(range(T + 1), ex[flip]["reward"][i, 0], color=colors[e], label=f"eps={e:g}")
            ax.plot(range(T + 1), ex[flip]["reward"][i, -1], color=colors[e], linestyle=":")
        ax.plot(range(T + 1), true_reward[0], color="grey", linestyle="--", linewidth=1,
                label="true reward as curator")
        ax.set_xlabel("generation t")
        ax.set_ylabel("E_t[r] (exact)")
        ax.set_title(f"exact, {flip} flips: a = 0 (solid), a = {fractions[-1]:g} (dotted)",
                     fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 3)
    styles = ["-", "--", ":"]
    for flip, color in zip(EXACT_FLIPS, ("tab:blue", "tab:red")):
        for j, a in enumerate(fractions):
            ax.plot(eps, ex[flip]["change"][:, j], color=color, linestyle=styles[j % 3],
                    marker="o", markersize=3, label=f"{flip}, a={a:g}")
            ax.axvline(ex[flip]["boundary"][j], color=color, linestyle=styles[j % 3],
                       linewidth=0.8, alpha=0.6)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("flip budget eps")
    ax.set_ylabel(f"E_T[r] - E_0[r], T = {T}")
    ax.set_title("exact: change after T generations (vertical: bisected eps_T(a))", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 4)
    rr = np.asarray(r)
    i4 = int(np.argmin(np.abs(eps - REAL_EPS)))
    for label, u, color in (("clean (eps=0)", ex["random"]["u0"][0], "black"),
                            (f"random eps={REAL_EPS:g}", ex["random"]["u0"][i4], "tab:blue"),
                            (f"margin eps={REAL_EPS:g}", ex["margin"]["u0"][i4], "tab:red")):
        ax.scatter(rr, u - np.mean(u), s=8, color=color, alpha=0.7, label=label)
    ax.set_xlabel("true reward r(x)")
    ax.set_ylabel("learned reward u(x) - mean")
    ax.set_title("learned reward at p0 (infinitely many pairs)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 5)
    gmm_eps = list(sizes["gmm_eps"])
    t_gmm = np.arange(sizes["gmm_generations"] + 1)
    flip_colors = {"random": "tab:blue", "margin": "tab:red", "influence": "tab:purple"}
    for flip in GMM_FLIPS:
        for i, e in enumerate(gmm_eps):
            if e == 0 and flip != "random":
                continue
            v = loops[flip].values["reward"][:, i]
            style = ["-", "--", "-.", ":"][min(i, 3)]
            ax.plot(t_gmm, v.mean(0), color="black" if e == 0 else flip_colors[flip],
                    linestyle=style, label="eps=0" if e == 0 else f"{flip}, eps={e:g}")
            ax.fill_between(t_gmm, v.min(0), v.max(0), color=flip_colors[flip], alpha=0.1)
    ax.set_xlabel("generation t")
    ax.set_ylabel("true reward of the fresh samples")
    ax.set_title(f"GMM + linear radial reward model: seed mean (band: seed range, "
                 f"{sizes['gmm_seeds']} seeds)", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 6)
    for j, flip in enumerate(GMM_FLIPS):
        ch = loops[flip].values["reward"][..., -1] - loops[flip].values["reward"][..., 0]
        x = np.asarray(gmm_eps) + (j - 1) * 0.01
        ax.scatter(np.repeat(x[None], ch.shape[0], 0), ch, s=10, color=flip_colors[flip],
                   alpha=0.6)
        ax.plot(x, ch.mean(0), color=flip_colors[flip], marker="o", label=flip)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("flip budget eps")
    ax.set_ylabel("E_T - E_0 (per seed, line: mean)")
    ax.set_title(f"GMM loop after {sizes['gmm_generations']} generations", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 7)
    ns = list(sizes["ss_comparisons"])
    t_ss = np.arange(sizes["ss_generations"] + 1)
    ncolors = [f"C{i}" for i in range(len(ns))]
    for j, e in enumerate(SS_EPS):
        ax.plot(t_ss, ss["theory"][j], color="black", linestyle=["--", ":"][j], linewidth=2,
                label=f"theory, eps={e:g}")
        for i, n in enumerate(ns):
            ax.errorbar(t_ss + 0.05 * (i - len(ns) / 2), ss["mean"][i, j], yerr=2 * ss["se"][i, j],
                        color=ncolors[i], linestyle=["-", "-."][j], linewidth=1, capsize=2,
                        label=f"N={n}" if j == 0 else None)
    ax.set_xlabel("generation t")
    ax.set_ylabel("E_t[r] (categorical loop, seed mean +- 2 SE)")
    ax.set_title(f"sample size: N pairs per generation, {SS_FLIP} flips "
                 f"(eps = {SS_EPS[0]:g} / {SS_EPS[1]:g})", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(2, 4, 8)
    for j, e in enumerate(SS_EPS):
        ax.plot(ns, np.abs(ss["z"][:, j, 1:]).max(-1), marker="o", label=f"eps={e:g}")
    ax.axhline(2, color="grey", linestyle="--", linewidth=1, label="2 SE")
    ax.axhline(ss["t_bonferroni"], color="black", linestyle=":", linewidth=1,
               label=f"Bonferroni t = {ss['t_bonferroni']:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pairs per generation N")
    ax.set_ylabel("max over t of |mean - theory| / SE")
    ax.set_title(f"distance from the theory ({sizes['ss_seeds']} seeds)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.suptitle("a learned curator under label flipping (8-mode ring, reward on mode 0, K = 4): "
                 "exact dynamics (top), sampled loops (bottom)")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def claims_of(sizes, eps, ex, true_reward, ridge, loops, ss):
    claims = []

    def claim(description, value, holds):
        claims.append({"description": description, "value": value, "holds": bool(holds)})

    # (i) eps = 0
    dev = float(np.max(np.abs(ex["random"]["reward"][0] - true_reward)))
    claim(f"(i) exact, eps = 0: the learned-reward trajectory equals sc.theory.trajectory with "
          f"the true reward at every t and a (value: max |difference|, tolerance {EXACT_TOL})",
          dev, dev <= EXACT_TOL)
    low = float(min(ex[f]["change"][0].min() for f in EXACT_FLIPS))
    claim("(i) exact, eps = 0: E_T - E_0 > 0 for every real_fraction (value: the smallest change)",
          low, low > RISE_TOL)
    # (ii) random flips
    below = eps < 0.5 - 1e-9
    low = float(ex["random"]["change"][below].min())
    claim("(ii) exact, random flips: the reward rises (E_T - E_0 > 1e-4) at every grid eps < 1/2 "
          "and every real_fraction (value: the smallest change)", low, low > RISE_TOL)
    dev = float(np.max(np.abs(ex["random"]["boundary"] - 0.5)))
    claim(f"(ii) exact, random flips: the bisected budget eps_T(a) where the rise stops is 1/2 "
          f"for every a (value: max |eps_T(a) - 1/2|, tolerance {BOUNDARY_TOL})", dev,
          dev <= BOUNDARY_TOL)
    upto = eps <= REAL_EPS + 1e-9
    pairs = int(ex["random"]["count_p0"][upto].max())
    claim(f"(ii) exact, random flips: at p0 the learned reward is monotone in r for every grid "
          f"eps <= {REAL_EPS:g} (value: the largest number of discordant pairs, r_x > r_y and "
          f"u_x < u_y)", pairs, pairs == 0)
    share = float(ex["random"]["share"][below].max())
    clean = float(ex["random"]["share"][0].max())
    claim(f"(ii) exact, random flips: along every trajectory with eps < 1/2 (every a and t) the "
          f"discordant share of the pair mass p_t(x) p_t(y) stays below {DISC_TOL:g} (value: the "
          f"largest share; the clean fit's own largest, from the ridge on states of tiny mass, "
          f"is {clean:.2e})", share, share <= DISC_TOL)
    # (iii) margin flips
    worst = float(ex["margin"]["boundary"].max())
    best_random = float(ex["random"]["boundary"].min())
    claim("(iii) exact: margin flips stop the rise at a smaller budget than random flips, for "
          "every a (value: [largest margin eps_T(a), smallest random eps_T(a)])",
          [worst, best_random],
          worst < best_random - 0.05)
    i4 = int(np.argmin(np.abs(eps - REAL_EPS)))
    share = float(ex["margin"]["share"][i4, 0, 0])
    claim(f"(iii) exact, margin flips at eps = {REAL_EPS:g}: more than half of the pair mass at p0 "
          f"is discordant (the learned order is mostly inverted; value: the share)", share,
          share > 0.5)
    # (iv) real data
    m = ex["margin"]["change"][i4]
    claim(f"(iv) exact, margin flips at eps = {REAL_EPS:g}: E_T - E_0 rises with the real-data "
          f"fraction but stays below 0 (real data limits the fall, does not restore the rise) "
          f"(value: E_T - E_0 per a)", m.tolist(),
          bool(np.all(np.diff(m) > 0) and np.all(m < -RISE_TOL)))
    rnd = ex["random"]["change"][i4]
    claim(f"(iv) exact, random flips at eps = {REAL_EPS:g}: E_T - E_0 falls with the real-data "
          f"fraction and stays above 0 (value: E_T - E_0 per a)", rnd.tolist(),
          bool(np.all(np.diff(rnd) < 0) and np.all(rnd > RISE_TOL)))
    # (v) the default ridge
    claim(f"(v) with the default ridge l2 = {DEFAULT_L2:g} the clean population fit at p0 is not "
          f"monotone in r (value: discordant pairs; with l2 = {L2:g}: "
          f"{int(ex['random']['count_p0'][0])})", ridge["default_discordant_pairs"],
          ridge["default_discordant_pairs"] > 0 and int(ex["random"]["count_p0"][0]) == 0)
    # (vi) GMM loop
    gmm_eps = np.asarray(sizes["gmm_eps"])
    change = {f: loops[f].values["reward"][..., -1] - loops[f].values["reward"][..., 0]
              for f in GMM_FLIPS}  # (seeds, eps)
    low = float(change["random"][:, gmm_eps == 0].min())
    claim("(vi) GMM loop, eps = 0: the true reward rises for every seed (value: the smallest "
          "E_T - E_0)", low, low > 0)
    low = float(change["random"].min())
    claim("(vi) GMM loop, random flips: the true reward rises for every seed at every budget "
          "(value: the smallest E_T - E_0)", low, low > 0)
    high = float(max(change["margin"][:, -1].max(), change["influence"][:, -1].max()))
    claim(f"(vi) GMM loop, eps = {gmm_eps[-1]:g}: margin and influence flips make the true reward "
          f"fall for every seed (value: the largest E_T - E_0)", high, high < 0)
    gaps = []
    for i in np.flatnonzero(gmm_eps > 0):
        worst_random = change["random"][:, i].min()
        best_other = max(change["margin"][:, i].max(), change["influence"][:, i].max())
        gaps.append(float(worst_random - best_other))
    claim("(vi) GMM loop, every budget > 0: every random-flip seed ends above every margin- and "
          "influence-flip seed (value: per budget, the worst random minus the best targeted "
          "E_T - E_0)", gaps, min(gaps) > 0)
    finite = all(bool(np.all(loops[f].values["finite"])) for f in GMM_FLIPS) and ss["finite"]
    claim("every sampled loop's fits stayed finite", finite, finite)
    # (vii) sample size
    max_z = np.abs(ss["z"][:, :, 1:]).max(-1)  # (N, eps)
    t_b = ss["t_bonferroni"]
    z0 = ss["z"][0, 0, 1:]
    claim(f"(vii) sample size, smallest N = {sizes['ss_comparisons'][0]}: the clean loop lags the "
          f"theory by more than the Bonferroni t = {t_b:.2f} standard errors at some generation "
          f"(value: the most negative z)", float(z0.min()), z0.min() < -t_b)
    claim(f"(vii) sample size, largest N = {sizes['ss_comparisons'][-1]}: every generation is "
          f"within {t_b:.2f} standard errors of the theory, clean and with margin flips at "
          f"eps = {SS_EPS[1]:g} (value: max |z| per eps)", max_z[-1].tolist(),
          bool(np.all(max_z[-1] <= t_b)))
    return claims


def main(argv=None) -> int:
    args, sizes = _cli.setup(__doc__, "reward_model_attack", "a coarser support, fewer generations", SIZES, argv)
    t_start, c_start = time.perf_counter(), time.process_time()
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    reward = sc.rewards.distance(centers[0], scale=SCALE, radius=RADIUS)
    _, p0, r = support(sizes["grid"], sizes["cut"], reward)
    print(f"support: {p0.shape[0]} states, E_0[r] = {float(p0 @ r):.3f}", flush=True)

    eps, ex, true_reward, ridge = exact(sizes, p0, r)
    t_exact = time.perf_counter() - t_start
    real, _ = sc.data.gaussian_ring(jax.random.key(0), 8192, std=STD)
    loops = {}
    for flip in GMM_FLIPS:
        loops[flip] = gmm_loop(sizes, reward, real, flip)
        loops[flip].save(args.out, name=f"gmm_{flip}")
        print(f"GMM {flip}: compile {loops[flip].metadata['compile_seconds']:.1f} s, run "
              f"{loops[flip].metadata['run_seconds']:.1f} s", flush=True)
    t_ss = time.perf_counter()
    _, p0_ss, r_ss = support(sizes["ss_grid"], sizes["ss_cut"], reward)
    ss = sample_size(sizes, p0_ss, r_ss)
    t_ss = time.perf_counter() - t_ss
    figure(os.path.join(args.out, "reward_model_attack.png"), sizes, eps, ex, true_reward, r,
           loops, ss)
    claims = claims_of(sizes, eps, ex, true_reward, ridge, loops, ss)

    fractions = list(sizes["fractions"])
    ns = list(sizes["ss_comparisons"])
    max_z = np.abs(ss["z"][:, :, 1:]).max(-1)
    n_star = {}
    for j, e in enumerate(SS_EPS):
        tail2, first2 = smallest_within(ns, max_z[:, j], 2.0)
        tail_b, first_b = smallest_within(ns, max_z[:, j], ss["t_bonferroni"])
        n_star[str(e)] = {"within_2se_from_on": tail2, "first_within_2se": first2,
                          "within_bonferroni_from_on": tail_b,
                          "first_within_bonferroni": first_b}
    i4 = int(np.argmin(np.abs(eps - REAL_EPS)))
    gmm_eps = list(sizes["gmm_eps"])
    summary = {
        "sizes": sizes, "claims": claims, "num_states": int(p0.shape[0]),
        "E0": float(p0 @ r), "l2": L2, "eps": eps.tolist(),
        "exact": {flip: {
            "boundary_eps_T": dict(zip(map(str, fractions), v["boundary"].tolist())),
            "one_step_boundary_eps_1": dict(zip(map(str, fractions),
                                                v["one_step_boundary"].tolist())),
            "boundary_halfwidth": v["boundary_halfwidth"],
            "rise_crossings_along_eps": v["crossings"],
            "change": v["change"].tolist(),
            "E_T": v["reward"][..., -1].tolist(),
            "E_T_at_real_eps": dict(zip(map(str, fractions), v["reward"][i4, :, -1].tolist())),
            "discordant_pairs_p0": v["count_p0"].tolist(),
            "discordant_share_p0": v["share"][:, 0, 0].tolist(),
            "discordant_share_max_along": v["share"].max(axis=(1, 2)).tolist(),
            "discordant_share_T_a0": v["share"][:, 0, -1].tolist(),
            "slope_p0": [float(np.polyfit(np.asarray(r, np.float64), u, 1)[0])
                         for u in np.asarray(v["u0"], np.float64)],
            "seconds": v["seconds"]} for flip, v in ex.items()},
        "exact_true_reward_E_T": dict(zip(map(str, fractions), true_reward[:, -1].tolist())),
        "ridge": ridge,
        "gmm": {flip: {
            "eps": gmm_eps,
            "E0_mean": float(loop.values["reward"][..., 0].mean()),
            "E_T_mean": loop.values["reward"][..., -1].mean(0).tolist(),
            "E_T_sd": loop.values["reward"][..., -1].std(0, ddof=1).tolist(),
            "E_T_min": loop.values["reward"][..., -1].min(0).tolist(),
            "E_T_max": loop.values["reward"][..., -1].max(0).tolist(),
            "accuracy_first_last": loop.values["accuracy"].mean(0)[:, [0, -1]].tolist(),
            "compile_s": loop.metadata["compile_seconds"],
            "run_s": loop.metadata["run_seconds"]} for flip, loop in loops.items()},
        "sample_size": {
            "num_states": int(p0_ss.shape[0]), "E0": float(p0_ss @ r_ss),
            "flip": SS_FLIP, "eps": list(SS_EPS), "comparisons": ns,
            "theory": ss["theory"].tolist(), "mean": ss["mean"].tolist(),
            "se": ss["se"].tolist(), "z": ss["z"].tolist(), "max_abs_z": max_z.tolist(),
            "t_bonferroni": ss["t_bonferroni"], "bonferroni_level": ss["level"],
            "se_floor": SE_FLOOR, "n_star": n_star,
            "accuracy_mean": ss["accuracy"].tolist(),
            "seconds": {str(n): list(v) for n, v in ss["seconds"].items()}},
        "exact_seconds": t_exact, "sample_size_seconds": t_ss,
        "wall_seconds": time.perf_counter() - t_start,
        "cpu_seconds": time.process_time() - c_start,
    }
    _cli.write_summary(args.out, summary)

    T = sizes["generations"]
    print(f"\nexact ({p0.shape[0]} states, E_0 = {summary['E0']:.3f}): E_T[r] after T = {T} "
          f"(true-reward curator: " + ", ".join(
              f"{v:.3f}" for v in true_reward[:, -1]) + f" at a = {fractions})")
    print(f"{'eps':>5} " + " ".join(f"{f + ' a=' + format(a, 'g'):>14}" for f in EXACT_FLIPS
                                    for a in fractions))
    for i, e in enumerate(eps):
        print(f"{e:5.2f} " + " ".join(f"{ex[f]['reward'][i, j, -1]:14.3f}" for f in EXACT_FLIPS
                                      for j in range(len(fractions))))
    for f in EXACT_FLIPS:
        print(f"{f}: eps_T(a) = " + ", ".join(f"{b:.4f} (a={a:g})" for a, b in
                                              zip(fractions, ex[f]["boundary"])))
    print(f"ridge: default l2 = {DEFAULT_L2:g}: {ridge['default_discordant_pairs']} discordant "
          f"pairs at p0, slope {ridge['default_slope']:.3f}; l2 = {L2:g}: slope "
          f"{ridge['slope']:.4f}")
    print(f"\nGMM loop: E_T - E_0 after {sizes['gmm_generations']} generations, seed mean "
          f"+- sd ({sizes['gmm_seeds']} seeds)")
    print(f"{'eps':>5} " + " ".join(f"{f:>16}" for f in GMM_FLIPS))
    for i, e in enumerate(gmm_eps):
        cells = []
        for f in GMM_FLIPS:
            ch = loops[f].values["reward"][:, i, -1] - loops[f].values["reward"][:, i, 0]
            cells.append(f"{ch.mean():+8.3f} +-{ch.std(ddof=1):6.3f}")
        print(f"{e:5.2f} " + " ".join(f"{c:>16}" for c in cells))
    print(f"\nsample size: max over t of |mean - theory| / SE ({sizes['ss_seeds']} seeds; "
          f"Bonferroni t = {ss['t_bonferroni']:.2f})")
    print(f"{'N':>6} " + " ".join(f"eps={e:<8g}" for e in SS_EPS))
    for i, n in enumerate(ns):
        print(f"{n:6d} " + " ".join(f"{max_z[i, j]:12.2f}" for j in range(len(SS_EPS))))
    print("N*: " + json.dumps(n_star))
    return _cli.report(claims, after=f"wall {summary['wall_seconds']:.1f} s, "
                                     f"CPU {summary['cpu_seconds']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
