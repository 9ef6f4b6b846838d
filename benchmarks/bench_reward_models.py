"""What does a learned reward cost? The loop with a reward model against the true reward, the
Newton fits against SciPy's L-BFGS-B, the population fit and the learned-reward trajectory.

Four sections (``--section``, default all), each timed in process CPU time (the median of
``--repeats`` steady-state calls after a first, compiling call, reported apart as ``compile_s``;
the wall-clock figures are in the JSON too). Every program runs on one CPU device; BLAS (the
OpenBLAS that SciPy ships, which jaxlib's CPU Cholesky calls too) is held to one thread for the
whole run (section ``blas`` shows why: with its default threads on a loaded machine the
Cholesky's CPU time is erratic and up to two orders of magnitude larger).

* ``loop``: jitted ``sc.run`` of ``T`` generations (the flagship: 8-mode ring, 8-component GMM
  with 10 EM steps, 4,096 kept samples, K = 4, reward the distance to mode 0) with a learned
  reward (``sc.reward_models.feedback(num_comparisons, refit_every=...)``: pairs, a ``luce(1)``
  judge, no flips) for ``linear(radial(mode centres, 0.3))`` and ``mlp(2, (32,), steps=100)``, and
  on the categorical model on ``M_LOOP`` states (reward a fixed normal draw per state) for
  ``tabular(M_LOOP)``. Each learned loop is timed in rounds interleaved with the same loop reading
  the true reward; ``s_per_generation`` is the run's CPU time over ``T`` (the run also draws the
  final record, and for a learned reward its last refit, on both sides), ``ratio`` the median over
  rounds of learned / true within a round.
* ``fit``: float64. The jitted ``tabular(M)`` fit (pairs of uniform states, true rewards a normal
  draw per state) and ``linear(radial)`` fit with M features (an s x s grid of centres over
  [-1.5, 1.5]^2, bandwidth the grid spacing; samples uniform on that square, the flagship reward),
  damped Newton to a gradient sup-norm of 1e-10, against ``scipy.optimize.minimize`` (L-BFGS-B,
  the same loss and its analytic gradient in NumPy, ``ftol=0``, ``gtol=1e-10``) on the same
  comparisons: ``scipy_s`` is its CPU time until its loss is within ``LOSS_RTOL`` (relative) of
  the Newton fit's (``scipy_grad_s``: until its gradient sup-norm is below 1e-10, when it gets
  there), ``speedup`` = scipy_s / jax_s (> 1: the jitted fit is faster). The grid uses the
  families' default ridge ``l2 = 1e-3``; a few rows repeat it with ``l2 = 1e-6`` (ill-conditioned
  fits, where L-BFGS-B needs hundreds of iterations). Also the Newton steps the fit takes
  (``iterations``, stepping the same solver one iteration at a time), the time of one
  ``jax.hessian`` of the loss, one Cholesky solve and one gradient at the solution,
  ``hessian_share`` = iterations x hessian / fit (a standalone call also pays what Newton's loop
  hoists out, e.g. the linear model's features, and the call overhead: it can exceed 1), and the
  same fit with the Hessian built analytically (``structured_s``: a scatter of the pairs'
  curvatures for the tabular model, ``D^T diag(c) D`` for the linear one).
* ``population``: ``sc.reward_models.population_fit`` (float32, Newton with the analytic O(M^2)
  Hessian) for M from 64 to 2,048 states (a Dirichlet(1) law, normal rewards).
* ``trajectory``: ``sc.theory.reward_model_trajectory`` (``T`` generations, K = 4, a refit every
  generation) per generation, against ``sc.theory.trajectory`` on the true reward.
* ``blas``: a float64 Cholesky at M = 512 and 1,024 with BLAS at its default threads and at one
  thread, interleaved.

    python benchmarks/bench_reward_models.py [--quick] [--json results/reward_models.json]
    python benchmarks/bench_reward_models.py --section fit   # one section
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import optimize, special  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from bench_curation import paired_ratio, time_interleaved  # noqa: E402
from selfconsume import data, rewards  # noqa: E402
from selfconsume._solvers import newton  # noqa: E402

CLOCK = "cpu_s"
rm = sc.reward_models
K, BETA, BANDWIDTH = 4, 1.0, 0.3
TOL = 1e-10  # float64 Newton tolerance (the package's default), and L-BFGS-B's gtol
LOSS_RTOL = 1e-10  # L-BFGS-B "reaches the same loss": f <= f_newton + LOSS_RTOL * max(1, |f|)
SCIPY_BUDGET_S = 120.0  # CPU seconds after which an L-BFGS-B run is stopped
DEFAULT_L2, LOW_L2 = 1e-3, 1e-6  # the families' default ridge; a weak one (ill-conditioned fits)

SIZES = {  # smoke, quick, full
    "generations": (2, 10, 10),
    "num_samples": (256, 4096, 4096),
    "loop_configs": (((64, 1),), ((256, 1), (4096, 1), (4096, 0)),
                     ((256, 1), (1024, 1), (4096, 1), (256, 0), (1024, 0), (4096, 0))),
    "loop_families": (("tabular",), ("linear", "mlp", "tabular"),
                      ("linear", "mlp", "tabular")),
    "mlp_steps": (10, 100, 100),
    "m_loop": (16, 256, 256),
    "fit_m": ((16,), (16, 256, 1024), (16, 256, 1024)),
    "fit_g": ((256,), (1024, 16384), (1024, 16384)),
    "linear_max_work": (1e9, 2e6, 2e6),  # linear fits with M x G above this are skipped
    "fit_low_ridge": ((("linear", 16, 256),),
                      (("tabular", 256, 1024), ("linear", 16, 16384), ("linear", 256, 1024)),
                      (("tabular", 256, 1024), ("tabular", 256, 16384), ("linear", 16, 16384),
                       ("linear", 256, 1024))),
    "pop_m": ((64,), (64, 128, 256, 512, 1024), (64, 128, 256, 512, 1024, 2048)),
    "traj_m": ((64,), (64, 256, 1024), (64, 256, 1024, 2048)),
    "traj_generations": (2, 5, 10),
    "blas_m": ((128,), (512, 1024), (512, 1024)),
    "repeats": (1, 3, 5),
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


@contextlib.contextmanager
def blas_threads(limit):
    """Holds the BLAS libraries (OpenBLAS of NumPy and SciPy; jaxlib's CPU LAPACK kernels call
    SciPy's) to ``limit`` threads; ``None`` leaves them as they are."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    if limit is None:
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield


def default_blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return None
    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"),
               default=None)


# --------------------------------------------------------------------------------------------
# 1. The loop: learned reward against the true reward
# --------------------------------------------------------------------------------------------


def gmm_problem(num_samples):
    real, centers = data.gaussian_ring(jax.random.key(0), num_samples)
    reward = rewards.distance(centers[0], scale=4.0, radius=0.1)
    model = sc.models.get("gmm", num_components=8, dim=2, em_steps=10)
    return model, model.init(jax.random.key(1), real), reward, centers


class StateReward:
    """A fixed reward per state (hashable by identity, as ``reward_fn`` must be)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, x):
        return self.table[x]


def categorical_problem(m, num_samples):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(m))
    states = jnp.asarray(rng.choice(m, size=num_samples, p=p), jnp.int32)
    model = sc.models.categorical(m)
    reward = StateReward(jnp.asarray(rng.normal(size=m), jnp.float32))
    return model, model.init(jax.random.key(1), states), reward


def loop_programs(model, reward, config):
    """(true, learned): jitted sc.run without and with a reward model (the model, reward and
    config closed over, as static arguments would be)."""

    def true(key, params0, hyper):
        final, hist = sc.run(key, params0, None, hyper, model=model, reward_fn=reward,
                             config=config)
        return final.params, hist

    def learned(key, params0, hyper, reward_model, fb):
        final, hist = sc.run(key, params0, None, hyper, model=model, reward_fn=reward,
                             config=config, reward_model=reward_model, feedback=fb)
        return final.params, hist

    return jax.jit(true), jax.jit(learned)


def bench_loop(args, sizes):
    t_gen = sizes["generations"]
    config = sc.LoopConfig(num_generations=t_gen, num_samples=sizes["num_samples"], k=K)
    hyper = sc.Hyperparams(beta=BETA)
    key = jax.random.key(2)
    gmm, gmm_params, gmm_reward, centers = gmm_problem(sizes["num_samples"])
    m = sizes["m_loop"]
    cat, cat_params, cat_reward = categorical_problem(m, sizes["num_samples"])
    setups = {
        "linear": ("gmm", gmm, gmm_params, gmm_reward, rm.linear(rm.radial(centers, BANDWIDTH))),
        "mlp": ("gmm", gmm, gmm_params, gmm_reward,
                rm.mlp(2, (32,), steps=sizes["mlp_steps"])),
        "tabular": (f"categorical({m})", cat, cat_params, cat_reward, rm.tabular(m)),
    }
    programs, rows = {}, []
    for family in sizes["loop_families"]:
        model_name, model, params0, reward, reward_model = setups[family]
        if model_name not in programs:
            programs[model_name] = loop_programs(model, reward, config)
        true, learned = programs[model_name]
        for num_comparisons, refit_every in sizes["loop_configs"]:
            fb = rm.feedback(num_comparisons, refit_every=refit_every)
            t_true, t_learned = time_interleaved(
                [(true, (key, params0, hyper)), (learned, (key, params0, hyper, reward_model, fb))],
                args.repeats)
            _, hist = learned(key, params0, hyper, reward_model, fb)
            row = {"model": model_name, "reward_model": family,
                   "num_comparisons": num_comparisons, "refit_every": refit_every,
                   "generations": t_gen, "s_per_generation": t_learned[CLOCK] / t_gen,
                   "true_s_per_generation": t_true[CLOCK] / t_gen,
                   "ratio": paired_ratio(t_learned, t_true),
                   "extra_s_per_generation": (t_learned[CLOCK] - t_true[CLOCK]) / t_gen,
                   "wall_s_per_generation": t_learned["steady_s"] / t_gen,
                   "true_wall_s_per_generation": t_true["steady_s"] / t_gen,
                   "compile_s": t_learned["compile_s"],
                   "true_compile_s": programs.setdefault(("compile", model_name),
                                                         t_true["compile_s"]),
                   "accuracy_0": float(hist["reward_model_accuracy"][0]),
                   "accuracy_T": float(hist["reward_model_accuracy"][-1]),
                   "fits_finite": bool(np.all(np.asarray(hist["fit_is_finite"]))),
                   "repeats": args.repeats, "load_average": load()}
            rows.append(row)
            print(f"  loop {model_name} {family} n={num_comparisons} refit={refit_every}: "
                  f"{1e3 * row['s_per_generation']:.1f} ms/gen vs "
                  f"{1e3 * row['true_s_per_generation']:.1f} ms/gen, ratio {row['ratio']:.2f}, "
                  f"compile {row['compile_s']:.1f} s", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# 2. The fits against L-BFGS-B
# --------------------------------------------------------------------------------------------


def grid_centers(m):
    s = round(math.sqrt(m))
    if s * s != m:
        raise ValueError(f"the linear fit's M must be a square; got {m}.")
    axis = np.linspace(-1.5, 1.5, s)
    centers = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return centers, 3.0 / (s - 1)


def fit_problem(family, m, g, l2=DEFAULT_L2):
    """(reward_model, params0, comparisons, numpy pieces) for G pairs (float64: call under x64)."""
    if family == "tabular":
        true = jax.random.normal(jax.random.key(m), (m,))
        x = jax.random.randint(jax.random.key(g + m), (2 * g,), 0, m)
        comps = rm.compare(jax.random.key(3), x, true[x], k=2, judge=sc.curators.luce(BETA))
        model = rm.tabular(m, l2=l2)
        return model, model.init(jax.random.key(0)), comps, None
    centers, bandwidth = grid_centers(m)
    x = jax.random.uniform(jax.random.key(g + m), (2 * g, 2), minval=-1.5, maxval=1.5)
    reward = rewards.distance(data.ring_centers(8)[0], scale=4.0, radius=0.1)
    comps = rm.compare(jax.random.key(3), x, reward(x), k=2, judge=sc.curators.luce(BETA))
    model = rm.linear(rm.radial(centers, bandwidth), l2=l2)
    return model, model.init(jax.random.key(0), x), comps, (centers, bandwidth)


def winners_losers(comps):
    order = np.asarray(comps.order)
    samples = np.asarray(comps.samples)
    rows = np.arange(order.shape[0])
    return samples[rows, order[:, 0]], samples[rows, order[:, 1]]


def numpy_loss(family, comps, extra, l2, m):
    """``prepare() -> fun``: the NumPy Bradley-Terry loss and gradient on the same pairs (the
    preparation, features included, is timed with the fit)."""
    win, lose = winners_losers(comps)
    w = np.asarray(comps.weights, np.float64)
    w = w / w.sum()

    def prepare():
        if family == "tabular":
            def fun(theta):
                d = theta[win] - theta[lose]
                s = w * special.expit(-d)  # -d(loss)/dd
                grad = (np.bincount(lose, s, minlength=m) - np.bincount(win, s, minlength=m)
                        + l2 * theta)
                return np.sum(w * np.logaddexp(0.0, -d)) + 0.5 * l2 * theta @ theta, grad
            return fun
        centers, bandwidth = extra

        def phi(x):
            d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
            return np.exp(-d2 / (2.0 * bandwidth ** 2))

        diff = phi(win) - phi(lose)

        def fun(theta):
            d = diff @ theta
            s = w * special.expit(-d)
            return (np.sum(w * np.logaddexp(0.0, -d)) + 0.5 * l2 * theta @ theta,
                    l2 * theta - diff.T @ s)
        return fun

    return prepare


def lbfgs(prepare, x0, target):
    """One L-BFGS-B run: CPU seconds to the loss target and to the gradient tolerance (NaN when
    not reached), total seconds, iterations, final loss and gradient sup-norm."""
    state = {"reach_loss": math.nan, "reach_grad": math.nan, "g": math.inf, "f": math.inf}
    c0 = time.process_time()
    fun = prepare()

    def wrapped(theta):
        f, g = fun(theta)
        state["f"], state["g"] = f, float(np.max(np.abs(g)))
        return f, g

    def callback(intermediate_result):
        now = time.process_time() - c0
        if math.isnan(state["reach_loss"]) and intermediate_result.fun <= target:
            state["reach_loss"] = now
        if math.isnan(state["reach_grad"]) and state["g"] <= TOL:
            state["reach_grad"] = now
        if now > SCIPY_BUDGET_S:
            raise StopIteration

    res = optimize.minimize(wrapped, x0, jac=True, method="L-BFGS-B", callback=callback,
                            options={"maxiter": 100000, "maxfun": 200000, "ftol": 0.0,
                                     "gtol": TOL, "maxls": 50})
    total = time.process_time() - c0
    f, g = fun(res.x)
    gnorm = float(np.max(np.abs(g)))
    if math.isnan(state["reach_loss"]) and f <= target:
        state["reach_loss"] = total
    if math.isnan(state["reach_grad"]) and gnorm <= TOL:
        state["reach_grad"] = total
    return {"reach_loss_s": state["reach_loss"], "reach_grad_s": state["reach_grad"],
            "total_s": total, "iterations": int(res.nit), "evaluations": int(res.nfev),
            "loss": float(f), "grad_sup": gnorm, "message": str(res.message), "x": res.x}


def structured_hessian(family, model, comps, extra):
    """The Bradley-Terry Hessian built from the pairs' curvatures: a scatter for the tabular
    model (O(G + M^2)), ``D^T diag(c) D + l2 I`` for the linear one (O(G M^2))."""
    order, samples = comps.order, comps.samples
    rows = jnp.arange(order.shape[0])
    win, lose = samples[rows, order[:, 0]], samples[rows, order[:, 1]]
    w = comps.weights / jnp.sum(comps.weights)
    l2 = model.l2
    if family == "tabular":
        m = model.num_states

        def hess(theta):
            d = theta[win] - theta[lose]
            c = w * jax.nn.sigmoid(d) * jax.nn.sigmoid(-d)
            h = jnp.zeros((m, m), theta.dtype)
            h = h.at[win, win].add(c).at[lose, lose].add(c)
            h = h.at[win, lose].add(-c).at[lose, win].add(-c)
            return h + l2 * jnp.eye(m, dtype=theta.dtype)
        return hess

    def hess(theta):
        diff = model.features(win) - model.features(lose)
        d = diff @ theta
        c = w * jax.nn.sigmoid(d) * jax.nn.sigmoid(-d)
        return (diff * c[:, None]).T @ diff + l2 * jnp.eye(theta.shape[0], dtype=theta.dtype)
    return hess


def bench_fit_one(args, family, m, g, l2):
    model, params0, comps, extra = fit_problem(family, m, g, l2)
    repeats = args.repeats if m * g < 4e6 else min(args.repeats, 2)  # fits of seconds
    loss = lambda p, c: model.loss(p, c)  # noqa: E731
    fit = jax.jit(lambda p, c: model.fit(jax.random.key(0), p, c))
    t_fit = _common.time_compiled(fit, params0, comps, repeats=repeats)
    theta = fit(params0, comps)
    f_jax = float(loss(theta, comps))
    grad = jax.jit(jax.grad(loss))
    g_jax = float(jnp.max(jnp.abs(grad(theta, comps))))
    # the Newton steps, one at a time with the same solver
    step = jax.jit(lambda p, c: newton(lambda q: model.loss(q, c), p, tol=TOL, max_iterations=1))
    p, err, steps = params0, math.inf, 0
    while err > TOL and steps < model.max_iterations:
        p, err = step(p, comps)
        err, steps = float(err), steps + 1
    stepped_diff = float(jnp.max(jnp.abs(p - theta)))
    # the pieces of one step, at the solution
    t_hess = _common.time_compiled(jax.jit(jax.hessian(loss)), theta, comps,
                                   repeats=repeats)
    h = jax.hessian(loss)(theta, comps)
    solve = jax.jit(lambda h, g: jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), g))
    t_solve = _common.time_compiled(solve, h, grad(theta, comps), repeats=repeats)
    t_grad = _common.time_compiled(grad, theta, comps, repeats=repeats)
    # the same Newton with the Hessian built from the pairs
    structured = jax.jit(lambda p, c: newton(
        lambda q: model.loss(q, c), p, tol=TOL, max_iterations=model.max_iterations,
        hessian=structured_hessian(family, model, c, extra))[0])
    t_struct = _common.time_compiled(structured, params0, comps, repeats=repeats)
    struct_diff = float(jnp.max(jnp.abs(structured(params0, comps) - theta)))
    # L-BFGS-B on the NumPy loss
    target = f_jax + LOSS_RTOL * max(1.0, abs(f_jax))
    prepare = numpy_loss(family, comps, extra, float(model.l2), m)
    x0 = np.zeros(m)
    wall, runs = [], []
    spent = 0.0
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = lbfgs(prepare, x0, target)
        wall.append(time.perf_counter() - t0)
        runs.append(out)
        spent += out["total_s"]
        if spent > 20.0:
            break
    reach = statistics.median(r["reach_loss_s"] for r in runs)
    reach_grad = statistics.median(r["reach_grad_s"] for r in runs)
    last = runs[-1]
    row = {"family": family, "M": m, "G": g, "l2": l2, "jax_s": t_fit[CLOCK],
           "jax_wall_s": t_fit["steady_s"],
           "compile_s": t_fit["compile_s"], "iterations": steps, "jax_loss": f_jax,
           "jax_grad_sup": g_jax, "stepped_max_diff": stepped_diff,
           "hessian_s": t_hess[CLOCK], "solve_s": t_solve[CLOCK], "grad_s": t_grad[CLOCK],
           "hessian_share": steps * t_hess[CLOCK] / t_fit[CLOCK],
           "solve_share": steps * t_solve[CLOCK] / t_fit[CLOCK],
           "structured_s": t_struct[CLOCK], "structured_speedup": t_fit[CLOCK] / t_struct[CLOCK],
           "structured_max_diff": struct_diff,
           "scipy_s": reach, "scipy_grad_s": reach_grad, "scipy_total_s": last["total_s"],
           "scipy_wall_s": statistics.median(wall), "scipy_iterations": last["iterations"],
           "scipy_evaluations": last["evaluations"], "scipy_loss_gap": last["loss"] - f_jax,
           "scipy_grad_sup": last["grad_sup"], "scipy_reached_loss": not math.isnan(reach),
           "scipy_reached_grad": not math.isnan(reach_grad),
           "scipy_max_diff": float(np.max(np.abs(last["x"] - np.asarray(theta)))),
           "scipy_message": last["message"], "scipy_repeats": len(runs),
           "speedup": (reach if not math.isnan(reach) else last["total_s"]) / t_fit[CLOCK],
           "repeats": repeats, "load_average": load()}
    print(f"  fit {family} M={m} G={g} l2={l2:g}: jax {1e3 * row['jax_s']:.1f} ms ({steps} "
          f"steps, hessian {100 * row['hessian_share']:.0f}%), structured "
          f"{1e3 * row['structured_s']:.1f} ms, L-BFGS-B {1e3 * reach:.1f} ms "
          f"({last['iterations']} it.), speedup {row['speedup']:.1f}", flush=True)
    return row


def bench_fit(args, sizes):
    rows = []
    with jax.enable_x64(True):
        for family in ("tabular", "linear"):
            for m in sizes["fit_m"]:
                for g in sizes["fit_g"]:
                    if family == "linear" and m * g > sizes["linear_max_work"]:
                        print(f"  fit linear M={m} G={g}: skipped (M x G above "
                              f"{sizes['linear_max_work']:g})", flush=True)
                        continue
                    rows.append(bench_fit_one(args, family, m, g, DEFAULT_L2))
        for family, m, g in sizes["fit_low_ridge"]:
            rows.append(bench_fit_one(args, family, m, g, LOW_L2))
    return rows


# --------------------------------------------------------------------------------------------
# 3. Population fit and the learned-reward trajectory
# --------------------------------------------------------------------------------------------


def population_problem(m):
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.dirichlet(np.ones(m)), jnp.float32),
            jnp.asarray(rng.normal(size=m), jnp.float32))


def bench_population(args, sizes):
    rows = []
    for m in sizes["pop_m"]:
        p, r = population_problem(m)
        model = rm.tabular(m)
        fit = jax.jit(lambda p, r, model=model: rm.population_fit(p, r, reward_model=model))
        t = _common.time_compiled(fit, p, r, repeats=args.repeats)
        u = fit(p, r)
        rows.append({"M": m, "ms": 1e3 * t[CLOCK], "wall_ms": 1e3 * t["steady_s"],
                     "compile_s": t["compile_s"], "ns_per_pair": 1e9 * t[CLOCK] / m ** 2,
                     "finite": bool(jnp.all(jnp.isfinite(u))), "load_average": load()})
        print(f"  population_fit M={m}: {rows[-1]['ms']:.2f} ms", flush=True)
    for prev, row in itertools.pairwise(rows):
        row["exponent"] = math.log(row["ms"] / prev["ms"]) / math.log(row["M"] / prev["M"])
    return rows


def bench_trajectory(args, sizes, population_rows):
    t_gen = sizes["traj_generations"]
    fit_ms = {row["M"]: row["ms"] for row in population_rows}
    rows = []
    for m in sizes["traj_m"]:
        p, r = population_problem(m)
        model = rm.tabular(m)
        learned = jax.jit(lambda p, r, model=model: sc.theory.reward_model_trajectory(
            p, r, num_generations=t_gen, k=K, reward_model=model))
        exact = jax.jit(functools.partial(sc.theory.trajectory, num_generations=t_gen, k=K))
        t_learned, t_exact = time_interleaved([(learned, (p, r)), (exact, (p, r))], args.repeats)
        ps, us = learned(p, r)
        per_gen = t_learned[CLOCK] / (t_gen + 1)  # T + 1 fits, T curated maps
        row = {"M": m, "generations": t_gen, "ms_per_generation": 1e3 * per_gen,
               "wall_ms_per_generation": 1e3 * t_learned["steady_s"] / (t_gen + 1),
               "true_reward_ms_per_generation": 1e3 * t_exact[CLOCK] / max(t_gen, 1),
               # per generation: T + 1 fits and maps against T maps
               "ratio": paired_ratio(t_learned, t_exact) * t_gen / (t_gen + 1),
               "compile_s": t_learned["compile_s"],
               "finite": bool(jnp.all(jnp.isfinite(ps)) & jnp.all(jnp.isfinite(us))),
               "load_average": load()}
        if m in fit_ms:
            row["population_fit_share"] = fit_ms[m] / row["ms_per_generation"]
        rows.append(row)
        print(f"  reward_model_trajectory M={m}: {row['ms_per_generation']:.2f} ms/gen "
              f"(true reward {row['true_reward_ms_per_generation']:.3f} ms/gen)", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# BLAS threads
# --------------------------------------------------------------------------------------------


def bench_blas(args, sizes, threads):
    rows = []
    repeats = max(args.repeats, 5)
    with jax.enable_x64(True):
        for m in sizes["blas_m"]:
            a = np.random.default_rng(0).normal(size=(m, m))
            h = jnp.asarray(a @ a.T / m + np.eye(m))
            chol = jax.jit(jnp.linalg.cholesky)
            jax.block_until_ready(chol(h))
            times = {"default": [], "one": []}
            for _ in range(repeats):
                for name, limit in (("default", threads), ("one", 1)):
                    with blas_threads(limit):
                        c0 = time.process_time()
                        jax.block_until_ready(chol(h))
                        times[name].append(time.process_time() - c0)
            row = {"M": m, "default_threads": threads,
                   "default_ms": 1e3 * statistics.median(times["default"]),
                   "default_max_ms": 1e3 * max(times["default"]),
                   "one_thread_ms": 1e3 * statistics.median(times["one"]),
                   "one_thread_max_ms": 1e3 * max(times["one"]), "load_average": load()}
            row["ratio"] = row["default_ms"] / row["one_thread_ms"]
            rows.append(row)
            print(f"  cholesky M={m}: {row['default_ms']:.2f} ms ({threads} BLAS threads) vs "
                  f"{row['one_thread_ms']:.2f} ms (one)", flush=True)
    return rows


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    p.add_argument("--section", default="all",
                   choices=["all", "loop", "fit", "population", "trajectory", "blas"])
    args = p.parse_args()
    level = 0 if args.smoke else 1 if args.quick else 2
    sizes = {name: values[level] for name, values in SIZES.items()}
    if args.smoke or args.quick:
        args.repeats = sizes["repeats"]
    want = lambda name: args.section in ("all", name)  # noqa: E731
    env = _common.environment()
    threads = default_blas_threads()
    print(f"reward models on {env['device']} ({env['backend']}), jax {env['jax']}, {env['cpu']}, "
          f"load average {load()}, BLAS threads {threads} (held to 1)")
    t_start = time.perf_counter()
    payload = {"benchmark": "reward_models", "environment": env, "settings": vars(args),
               "sizes": sizes, "load_average_start": load(), "blas_default_threads": threads,
               "blas_threads": 1, "clock": "process CPU time", "loss_rtol": LOSS_RTOL,
               "dtypes": {"loop": "float32", "fit": "float64", "population": "float32",
                          "trajectory": "float32", "blas": "float64"},
               "tol": TOL, "seconds": {}}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        payload["seconds"][name] = time.perf_counter() - t0
        return out

    if want("blas"):
        print("Cholesky (float64), BLAS default threads vs one:")
        payload["blas"] = timed("blas", lambda: bench_blas(args, sizes, threads))
    with blas_threads(1):
        if want("loop"):
            print(f"loop: {sizes['generations']} generations, {sizes['num_samples']} kept samples, "
                  f"K = {K}")
            rows = timed("loop", lambda: bench_loop(args, sizes))
            print(_common.table(rows, [
                ("model", ""), ("reward_model", ""), ("num_comparisons", ""), ("refit_every", ""),
                ("s_per_generation", ".4f"), ("true_s_per_generation", ".4f"), ("ratio", ".2f"),
                ("compile_s", ".1f"), ("true_compile_s", ".1f"), ("accuracy_0", ".2f")]))
            payload["loop"] = rows
            payload["loop_max_ratio"] = max(r["ratio"] for r in rows)
        if want("fit"):
            print(f"fit (float64, Newton to {TOL:g} against L-BFGS-B):")
            rows = timed("fit", lambda: bench_fit(args, sizes))
            print(_common.table(rows, [
                ("family", ""), ("M", ""), ("G", ""), ("l2", "g"), ("jax_s", ".4f"),
                ("compile_s", ".1f"), ("iterations", ""), ("hessian_s", ".4f"), ("solve_s", ".4f"),
                ("hessian_share", ".2f"), ("structured_s", ".4f"), ("scipy_s", ".4f"),
                ("scipy_iterations", ""), ("speedup", ".2f")]))
            payload["fit"] = rows
            payload["fit_speedup_median"] = statistics.median(r["speedup"] for r in rows)
        pop_rows = []
        if want("population") or want("trajectory"):
            print("population_fit (float32):")
            pop_rows = timed("population", lambda: bench_population(args, sizes))
            print(_common.table(pop_rows, [("M", ""), ("ms", ".3f"), ("compile_s", ".1f"),
                                           ("ns_per_pair", ".1f")]))
            payload["population"] = pop_rows
        if want("trajectory"):
            print(f"reward_model_trajectory (float32, {sizes['traj_generations']} generations, "
                  f"K = {K}):")
            rows = timed("trajectory", lambda: bench_trajectory(args, sizes, pop_rows))
            print(_common.table(rows, [("M", ""), ("ms_per_generation", ".3f"),
                                       ("true_reward_ms_per_generation", ".3f"), ("ratio", ".1f"),
                                       ("compile_s", ".1f")]))
            payload["trajectory"] = rows
    payload["load_average_end"] = load()
    payload["load_average_1min_end"] = payload["load_average_end"][0]
    payload["seconds"]["total"] = time.perf_counter() - t_start
    print(f"total {payload['seconds']['total']:.0f} s, load average {load()}")
    _common.write_json(args.json, payload)


if __name__ == "__main__":
    main()
