"""Reward hacking: a misspecified learned reward steers the curated loop (beyond the paper).

Setting. The 8-mode ring (radius 1, std 0.05), 8,192 real points; the generator is an
8-component GMM (10 EM steps per refit, warm-started) fitted to them, then retrained on its own
curated samples only (no real data). The true reward is r(x) = -4 ||x - c_0||^2, c_0 = (1, 0)
the centre of mode 0 (0 at c_0, -16 at the opposite mode); we report the regret
rho_t = -E_t[r] = 4 E_t||x - c_0||^2 > 0 of the fresh candidates. The curator never reads r: it
reads a learned proxy u. ``sc.reward_models.feedback(num_comparisons, k=2, judge=luce(1),
refit_every=R)``: at the generations due for a refit (0, R, 2R, ...; only 0 for R = 0,
"frozen") ``num_comparisons`` pairs of fresh samples of the current model are judged on r by a
Bradley-Terry judge (Luce, beta 1) and u is refitted from its current params; each kept sample
is the Luce(beta = 2) pick, on u, of K = 4 candidates. Reward models:

* misspecified, ``linear("coordinates")``: u(x) = w . x, which cannot represent r. Fitted on the
  ring it learns "more x_1 is better", w_0 = (w, 0) with w > 0, which has no maximiser;
* well-specified, ``linear(Quadratic())``, features (x_1, x_2, ||x||^2): r is in the family
  (coefficients (8, 0, -4) on the judge's scale beta_judge r, up to the constant that
  Bradley-Terry leaves free);
* flexible, ``mlp(2, (32,), steps=200)`` (Adam, warm-started; default ridge).

Both linear families use the ridge L2 = 1e-6: the judge separates most ring pairs (reward gaps of
several units), the likelihood is flat along w, and the default 1e-3 shrinks w_0 by about a
quarter and the weakly identified ||x||^2 coefficient (||x||^2 = 1 +- 0.1 on the ring) by half.

Refit schedules R in {0, 5, 1} for the linear proxy, {0, 1} for the others: 7 settings, each one
compiled ``sc.sweep`` over ``seeds`` seeds (quick mode leaves out "quadratic, frozen", which no
claim reads). Every sweep uses the same key, so seed s draws the same numbers in every setting:
the generation-0 comparisons and fit are the same under every schedule, schedules that agree up
to a generation agree bit for bit up to it, and settings are compared per seed.

Measured per generation on the fresh candidates (``metrics_fn``): the true reward, the proxy the
curator read (on the reward model's own scale) and its spread, the mean position, the share
nearest mode 0, the proxy's accuracy on 1,024 held-out pairs judged like the training pairs, and
the first ``snapshot_points`` candidates (the figure's snapshots). A frozen proxy keeps one
scale: we report its gain standardised by its spread over the generation-0 candidates; for the
linear family we also evaluate the generation-0 proxy w_0 . x on every schedule's candidates (its
gain is w_0 . (mean_t - mean_0)): the reward the curator would read had it never refitted. The
study is compile-bound (seven programs that run for seconds): ``fast_compile`` has XLA compile
with LLVM at -O0 unless XLA_FLAGS sets a level.

Parting. With l_{s,t} = log rho_{s,t} (seed s, generation t), m_t its mean over seeds (the log
of the geometric-mean regret), p(t) = argmin_{u <= t} m_u and SE_t the standard error over seeds
of the paired differences l_{s,t} - l_{s,p(t)}, the detection generation t_detect is the first t
with m_t - m_{p(t)} > Z SE_t (Z = 3), and the parting generation is t_part = p(t_detect): the
last generation at which the true reward was at its best before it fell (none if no t
qualifies). The log scale (geometric means) tames the seeds whose generator runs far away.

Claims (each checks itself; exit status 1 if one fails): (i) misspecified and frozen: the true
reward parts from the proxy inside the run, 0 < t_part < T; every seed ends with a regret at
least HACK_FACTOR times its own minimum over t; the proxy rises from t_part to T on every seed;
(ii) refitting the linear proxy every generation, or every 5, every seed ends with a lower regret
than frozen; with R = 5 the regret is the frozen one's bit for bit at t = 0..5 (the first refit
is at t = 5); (iii) refitted every generation, the linear, quadratic and MLP proxies end with a
geometric-mean regret within a factor STAY of its minimum over t (no lasting parting); (iv)
refitted every generation, the well-specified proxy ends closer to the optimum than the linear
one (log regret lower by more than Z paired standard errors); (v) the flexible MLP proxy,
frozen, is hacked too: its log regret at T is above its minimum over t by more than Z paired
standard errors; and every fit stays finite.

    python experiments/reward_hacking.py [--quick] [--out DIR]
"""

from __future__ import annotations

import dataclasses
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

STD, NUM_MODES, SCALE, BETA, BETA_JUDGE, K = 0.05, 8, 4.0, 2.0, 1.0, 4
Z = 3.0  # standard errors for the parting generation and the claims
NUM_HELDOUT = 1024  # held-out pairs per generation for the proxy's accuracy
L2 = 1e-6  # ridge of the two linear families (the default 1e-3 shrinks w_0 by a quarter here)
HACK_FACTOR = 2.0  # claim (i): every seed's regret at T vs its own minimum
STAY = 1.25  # claim (iii): geometric-mean regret at T vs its minimum over t
SIZES = {  # full, quick
    "generations": (30, 15),
    "seeds": (16, 8),
    "num_samples": (2048, 512),
    "num_comparisons": (1024, 512),
    "snapshot_points": (512, 256),
    "skip": ((), ("quadratic, frozen",)),  # settings left out (no claim reads it)
}
# (name, reward-model family, refit_every)
SETTINGS = (
    ("linear, frozen", "linear", 0),
    ("linear, refit every 5", "linear", 5),
    ("linear, refit every 1", "linear", 1),
    ("quadratic, frozen", "quadratic", 0),
    ("quadratic, refit every 1", "quadratic", 1),
    ("mlp, frozen", "mlp", 0),
    ("mlp, refit every 1", "mlp", 1),
)


@dataclasses.dataclass(frozen=True)
class Quadratic:
    """Features (x_1, x_2, ||x||^2): the true reward -4 ||x - c_0||^2 is linear in them (up to a
    constant, which Bradley-Terry does not identify). Hashable, as a feature map must be."""

    def __call__(self, x):
        x = jnp.asarray(x)
        x = x.reshape(x.shape[0], -1).astype(jnp.result_type(float))
        return jnp.concatenate([x, jnp.sum(x * x, axis=1, keepdims=True)], axis=1)


def true_reward(x):
    """r(x) = -SCALE ||x - c_0||^2, c_0 = (1, 0) the centre of mode 0."""
    target = sc.data.ring_centers(NUM_MODES, 1.0)[0]
    return -SCALE * jnp.sum(jnp.square(jnp.asarray(x) - target), axis=1)


def reward_model(family):
    if family == "linear":
        return sc.reward_models.linear("coordinates", l2=L2)
    if family == "quadratic":
        return sc.reward_models.linear(Quadratic(), l2=L2)
    return sc.reward_models.mlp(2, (32,), steps=200)


def loop(sizes, family, refit_every, real):
    """One compiled sc.sweep over the seeds: the history of one setting."""
    model = sc.models.gmm(NUM_MODES, 2, em_steps=10)
    config = sc.LoopConfig(num_generations=sizes["generations"],
                           num_samples=sizes["num_samples"], k=K)
    rm = reward_model(family)
    fb = sc.reward_models.feedback(num_comparisons=sizes["num_comparisons"], k=2,
                                   judge=sc.curators.luce(BETA_JUDGE), refit_every=refit_every,
                                   num_heldout=NUM_HELDOUT)
    centers = sc.data.ring_centers(NUM_MODES, 1.0)
    m = sizes["snapshot_points"]

    def metrics(state, info):  # the candidates are iid draws of the current model
        return {"true_reward_mean": jnp.mean(info.candidate_rewards),
                "proxy_reward_mean": jnp.mean(info.proxy_rewards),
                "reward_model_accuracy": info.reward_model_accuracy,
                "mean_x": jnp.mean(info.candidates, axis=0),
                "mode0_share": jnp.mean(sc.metrics.nearest_mode(info.candidates, centers) == 0),
                "proxy_std": jnp.std(info.proxy_rewards),
                "snapshot": info.candidates[:m]}

    def fn(key):
        key_init, key_run = jax.random.split(key)
        params0 = model.init(key_init, real)
        final, hist = sc.run(key_run, params0, None, sc.Hyperparams(beta=BETA), model=model,
                             reward_fn=true_reward, config=config, metrics_fn=metrics,
                             default=False, reward_model=rm, feedback=fb)
        out = dict(hist)
        if family == "linear":
            out["w_final"] = final.reward_params  # frozen: w_0, the generation-0 fit
        return out

    return sc.sweep(jax.random.key(7), fn, num_seeds=sizes["seeds"])


def active(sizes):
    return [setting for setting in SETTINGS if setting[0] not in sizes["skip"]]


def regret(values):
    """rho = -E_t[r] = SCALE E||x - c_0||^2 > 0 per seed and generation, from the history."""
    return -np.asarray(values["true_reward_mean"], np.float64)


def parting(rho):
    """The parting of the module docstring on log rho (seeds, T + 1): (t_part, t_detect), None
    when the running minimum of the seed mean of log rho is never left by more than Z paired
    standard errors."""
    ell = np.log(rho)
    mean = ell.mean(0)
    for t in range(ell.shape[1]):
        p = int(np.argmin(mean[:t + 1]))
        d, se = paired(ell[:, t], ell[:, p])
        if d > 0 and d > Z * se:
            return p, t
    return None, None


def paired(a, b):
    """Mean and standard error over seeds of a - b."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.shape[0]))


def zscore(d, se):
    """d / se, with a zero standard error giving +-inf (or 0 for d = 0)."""
    return d / se if se > 0 else math.copysign(math.inf, d) if d else 0.0


def measure(sizes, runs):
    """Per setting: the parting, the regret at its minimum and at T, the proxy gains."""
    w0 = np.asarray(runs["linear, frozen"].values["w_final"], np.float64)  # (S, 2)
    sd0_lin = np.asarray(runs["linear, frozen"].values["proxy_std"], np.float64)[:, 0]
    out = {}
    for name, family, refit in active(sizes):
        v = runs[name].values
        rho = regret(v)
        ell = np.log(rho)
        t_part, t_detect = parting(rho)
        best = int(np.argmin(ell.mean(0)))  # the generation of the lowest geometric-mean regret
        up, up_se = paired(ell[:, -1], ell[:, best])
        gm = np.exp(ell.mean(0))
        acc = np.asarray(v["reward_model_accuracy"], np.float64)
        row = {"family": family, "refit_every": refit, "t_part": t_part, "t_detect": t_detect,
               "best_generation": best, "regret_0": float(gm[0]), "regret_best": float(gm[best]),
               "regret_T": float(gm[-1]),
               "regret_T_seed_range": [float(rho[:, -1].min()), float(rho[:, -1].max())],
               "log_rise_T": up, "log_rise_T_se": up_se,
               "seed_ratio_T_to_own_min_range": [float((rho[:, -1] / rho.min(1)).min()),
                                                 float((rho[:, -1] / rho.min(1)).max())],
               "mean_x1_T": float(np.asarray(v["mean_x"])[:, -1, 0].mean()),
               "mode0_share_T": float(np.asarray(v["mode0_share"])[:, -1].mean()),
               "accuracy_0": float(acc[:, 0].mean()), "accuracy_T": float(acc[:, -1].mean()),
               "accuracy_T_se": float(acc[:, -1].std(ddof=1) / math.sqrt(acc.shape[0])),
               "all_fits_finite": bool(np.all(v["fit_is_finite"])),
               "regret_geometric_mean": gm.tolist(),
               "regret_mean": rho.mean(0).tolist(),
               "mean_x1": np.asarray(v["mean_x"], np.float64)[..., 0].mean(0).tolist(),
               "mode0_share": np.asarray(v["mode0_share"], np.float64).mean(0).tolist(),
               "accuracy": acc.mean(0).tolist()}
        proxy = np.asarray(v["proxy_reward_mean"], np.float64)
        sd0 = np.asarray(v["proxy_std"], np.float64)[:, 0]
        if refit == 0:  # one scale: the gain in units of the generation-0 spread
            row["proxy_gain_sd"] = ((proxy - proxy[:, :1]) / sd0[:, None]).mean(0).tolist()
            start = t_part if t_part is not None else best
            row["proxy_rise_after_part_min"] = float(np.min(proxy[:, -1] - proxy[:, start]))
        if family == "linear":  # the generation-0 proxy w_0 . x on this schedule's candidates
            mx = np.asarray(v["mean_x"], np.float64)
            g0 = np.einsum("std,sd->st", mx - mx[:, :1], w0) / sd0_lin[:, None]
            row["w0_proxy_gain_sd"] = g0.mean(0).tolist()
        out[name] = row
    return out


def claims_of(sizes, runs, rows):
    T = sizes["generations"]
    rho = {name: regret(runs[name].values) for name, _, _ in active(sizes)}
    claims = []

    def claim(description, value, holds):
        claims.append({"description": description, "value": value, "holds": bool(holds)})

    fr = rows["linear, frozen"]
    claim(f"(i) linear proxy, frozen: the true reward parts from the proxy inside the run, "
          f"0 < t_part < T = {T} (value: t_part)", fr["t_part"],
          fr["t_part"] is not None and 0 < fr["t_part"] < T)
    low = fr["seed_ratio_T_to_own_min_range"][0]
    claim(f"(i) linear proxy, frozen: every seed ends with a regret at least {HACK_FACTOR:g} times "
          f"its own minimum over t (value: the smallest ratio)", low, low >= HACK_FACTOR)
    rise = fr["proxy_rise_after_part_min"]
    claim("(i) linear proxy, frozen: the proxy rises from t_part to T on every seed (value: the "
          "smallest rise, on the proxy's scale)", rise, rise > 0)
    for name in ("linear, refit every 1", "linear, refit every 5"):
        worst = float(np.max(rho[name][:, -1] / rho["linear, frozen"][:, -1]))
        claim(f"(ii) {name}: every seed ends with a lower regret than with the frozen proxy "
              f"(value: the largest ratio)", worst, worst < 1)
    same = int(np.sum(rho["linear, refit every 5"][:, :6] != rho["linear, frozen"][:, :6]))
    claim("(ii) linear proxy refitted every 5 generations: the regret is that of the frozen proxy "
          "bit for bit at t = 0..5 (the same random numbers; the first refit is at t = 5; value: "
          "the entries that differ)", same, same == 0)
    for name in ("linear, refit every 1", "quadratic, refit every 1", "mlp, refit every 1"):
        factor = math.exp(rows[name]["log_rise_T"])
        claim(f"(iii) {name}: the geometric-mean regret at T is within a factor {STAY:g} of its "
              f"minimum over t (value: the factor)", factor, factor <= STAY)
    z = zscore(*paired(np.log(rho["linear, refit every 1"][:, -1]),
                       np.log(rho["quadratic, refit every 1"][:, -1])))
    claim(f"(iv) refitted every generation, the well-specified (quadratic) proxy ends closer to "
          f"the optimum than the linear one: log regret lower by more than {Z:g} paired standard "
          f"errors (value: the difference in standard errors)", z, z > Z)
    mf = rows["mlp, frozen"]
    z = zscore(mf["log_rise_T"], mf["log_rise_T_se"])
    claim(f"(v) MLP proxy, frozen: the log regret at T is above its minimum over t by more than "
          f"{Z:g} paired standard errors (value: the rise in standard errors)", z, z > Z)
    finite = all(row["all_fits_finite"] for row in rows.values())
    claim("every fit (generator and reward model) stays finite in every setting and seed",
          finite, finite)
    return claims


STYLE = {
    "linear, frozen": ("tab:red", "-"),
    "linear, refit every 5": ("tab:orange", "-"),
    "linear, refit every 1": ("tab:blue", "-"),
    "quadratic, frozen": ("tab:green", "--"),
    "quadratic, refit every 1": ("tab:olive", "--"),
    "mlp, frozen": ("tab:purple", ":"),
    "mlp, refit every 1": ("tab:cyan", ":"),
}


def figure(path, sizes, runs, rows):
    T = sizes["generations"]
    t = np.arange(T + 1)
    fig = Figure(figsize=(17, 8.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 4)
    fr = rows["linear, frozen"]

    ax = fig.add_subplot(gs[0, 0])
    for name, _, _ in active(sizes):
        color, ls = STYLE[name]
        mean, low, high = sc.stats.mean_and_interval(np.log(regret(runs[name].values)))
        ax.plot(t, np.exp(mean), color=color, linestyle=ls, label=name)
        ax.fill_between(t, np.exp(low), np.exp(high), color=color, alpha=0.15)
    if fr["t_part"] is not None:
        ax.axvline(fr["t_part"], color="tab:red", linewidth=0.8, alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("generation t")
    ax.set_ylabel("regret -E_t[r] = 4 E||x - c_0||^2")
    ax.set_title("true regret: geometric mean over seeds, 95% interval", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(gs[0, 1])
    for name in ("linear, frozen", "linear, refit every 1", "quadratic, refit every 1"):
        color, _ = STYLE[name]
        rho = regret(runs[name].values)
        for s_, row in enumerate(rho):
            ax.plot(t, row, color=color, linewidth=0.8, alpha=0.6,
                    label=name if s_ == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("generation t")
    ax.set_ylabel("regret")
    ax.set_title("every seed", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(gs[0, 2])
    for name, family, refit in active(sizes):
        color, ls = STYLE[name]
        if family == "linear":
            ax.plot(t, rows[name]["w0_proxy_gain_sd"], color=color, linestyle=ls,
                    label=f"{name}: w_0 . x")
        elif refit == 0:
            ax.plot(t, rows[name]["proxy_gain_sd"], color=color, linestyle=ls,
                    label=f"{name}: u_0(x)")
    ax.set_xlabel("generation t")
    ax.set_ylabel("(u_0 gain) / sd of u_0 at t = 0")
    ax.set_title("the generation-0 proxy u_0, seed mean", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(gs[0, 3])
    for name, _, _ in active(sizes):
        color, ls = STYLE[name]
        mx = np.asarray(runs[name].values["mean_x"], np.float64)[..., 0]
        ax.plot(t, mx.mean(0), color=color, linestyle=ls, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylim(0.8, None)
    ax.set_xlabel("generation t")
    ax.set_ylabel("mean x_1 of the candidates")
    ax.set_title("position along w_0 (c_0 at x_1 = 1), seed mean", fontsize=10)
    ax.grid(alpha=0.3)

    # snapshots, seed 0: frozen linear (red) and refitted every generation (blue)
    tp = fr["t_part"] if fr["t_part"] is not None else T // 3
    gens = sorted({0, tp, (tp + T) // 2, T})
    while len(gens) < 4:
        gens = sorted(set(gens) | {max(g for g in range(1, T) if g not in gens)})
    w0 = np.asarray(runs["linear, frozen"].values["w_final"][0], np.float64)
    c0 = np.asarray(sc.data.ring_centers(NUM_MODES, 1.0))[0]
    for j, g in enumerate(gens[:4]):
        ax = fig.add_subplot(gs[1, j])
        for name, color in (("linear, refit every 1", "tab:blue"),
                            ("linear, frozen", "tab:red")):
            pts = np.asarray(runs[name].values["snapshot"][0, g], np.float64)
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=color, alpha=0.5,
                       label=f"{name} (seed 0)")
        ax.plot(*c0, marker="x", color="black", markersize=10, mew=2, label="c_0 (optimum)")
        if j == 0:
            ax.set_xlim(-1.5, 1.5)
            ax.set_ylim(-1.5, 1.5)
            ax.annotate("", xy=0.6 * w0 / np.linalg.norm(w0), xytext=(0, 0),
                        arrowprops={"arrowstyle": "->", "color": "tab:red"})
            ax.text(0.05, 0.1, "w_0", color="tab:red")
            ax.legend(fontsize=7, loc="lower left")
        else:
            ax.set_xlim(0.6, 1.8)
            ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        tag = " (t_part)" if g == fr["t_part"] else ""
        ax.set_title(f"candidates at t = {g}{tag}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"reward hacking on the 8-mode ring: true r = -4 ||x - c_0||^2, the curator "
                 f"(K = {K}, Luce beta = {BETA:g}) reads a learned proxy fitted on Bradley-Terry "
                 f"pairs ({sizes['seeds']} seeds)")
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def fast_compile():
    """Compiles with LLVM at -O0 (``--xla_backend_optimization_level=0``) unless XLA_FLAGS sets a
    level: the study is compile-bound (seven programs that each run for seconds), and this halves
    XLA's compile time. Only before JAX starts its CPU backend; later calls change nothing."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def main(argv=None) -> int:
    fast_compile()
    args, sizes = _cli.setup(__doc__, "reward_hacking", "fewer generations, samples and seeds", SIZES, argv)
    t0, c0 = time.perf_counter(), time.process_time()
    real, _ = sc.data.gaussian_ring(jax.random.key(0), 8192, std=STD)
    runs, timing = {}, {}
    for name, family, refit in active(sizes):
        runs[name] = loop(sizes, family, refit, real)
        md = runs[name].metadata
        timing[name] = {"compile_s": md["compile_seconds"], "run_s": md["run_seconds"]}
        print(f"{name}: compile {md['compile_seconds']:.1f} s, run {md['run_seconds']:.1f} s",
              flush=True)
        runs[name].save(args.out, name=name.replace(", ", "_").replace(" ", "_"))
    rows = measure(sizes, runs)
    figure(os.path.join(args.out, "reward_hacking.png"), sizes, runs, rows)
    claims = claims_of(sizes, runs, rows)
    w0 = np.asarray(runs["linear, frozen"].values["w_final"], np.float64)
    summary = {
        "sizes": sizes, "claims": claims, "settings": rows,
        "w0_mean": w0.mean(0).tolist(), "w0_sd": w0.std(0, ddof=1).tolist(),
        "timing": timing, "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }
    _cli.write_summary(args.out, summary)
    T = sizes["generations"]
    print(f"generation-0 linear proxy w_0 = {w0.mean(0).round(2).tolist()} (seed sd "
          f"{w0.std(0, ddof=1).round(2).tolist()})")
    print(f"{'setting':<26} {'t_part':>6} {'t_det':>5} {'rho_0':>6} {'rho_min (t)':>14} "
          f"{'rho_T':>7} {'seeds rho_T':>15} {'x1_T':>6} {'acc_T':>5} {'u0 gain':>7}")
    for name, _, _ in active(sizes):
        r = rows[name]
        gain = r.get("w0_proxy_gain_sd", r.get("proxy_gain_sd", [math.nan]))[-1]
        lo, hi = r["regret_T_seed_range"]
        print(f"{name:<26} {r['t_part']!s:>6} {r['t_detect']!s:>5} {r['regret_0']:6.2f} "
              f"{r['regret_best']:8.4f} ({r['best_generation']:>2}) {r['regret_T']:7.4f} "
              f"{lo:7.4f}-{hi:<7.3f} {r['mean_x1_T']:6.3f} {r['accuracy_T']:5.3f} {gain:7.2f}")
    print(f"(T = {T}; rho = -E_t[r], geometric mean over {sizes['seeds']} seeds; rho_min at "
          f"generation t; seeds rho_T: the range over seeds; x1_T: the candidates' mean x_1; "
          f"acc_T: held-out accuracy on the judge's pairs; u0 gain: the generation-0 proxy's gain "
          f"from t = 0 to T in units of its spread at t = 0, where it has one scale)")
    return _cli.report(claims, show=lambda c: f"({c['value']})", after=(
        f"wall {summary['wall_seconds']:.0f} s ({summary['cpu_seconds']:.0f} CPU-s)"))


if __name__ == "__main__":
    sys.exit(main())
