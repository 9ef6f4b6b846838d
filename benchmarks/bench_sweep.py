"""The flagship scan, three ways: one compiled sweep, a Python loop of jitted runs, scikit-learn.

The work: the 8-mode ring, an 8-component GMM, ``num_samples`` kept samples per generation,
K = 4, 20 generations, 10 EM steps per fit, 16 seeds x 4 real-data fractions (64 configurations).

(a) ``sc.sweep``: the 64 configurations as one compiled program;
(b) a Python loop over the configurations calling the jitted single-configuration ``sc.run``;
(c) scikit-learn's ``GaussianMixture`` (``max_iter`` = 10 EM steps, ``tol=0``, warm-started) with
    NumPy rewards and curation, in a Python loop, its BLAS held to one thread (more threads only
    add contention on 2x2 matrices: 10x slower on a loaded 2-core machine). ``GaussianMixture``
    takes no sample weights, so the ``replace`` refit on real fraction a uses all n kept samples
    plus round(a / (1 - a) * n) real points: the same weighting, by counts.

The real data set has as many points as the kept samples (``--num-real``, default n). On a CPU the
script exposes one XLA host device per core (``XLA_FLAGS=--xla_force_host_platform_device_count``,
unless XLA_FLAGS already sets it), so that (a) shards its configurations over the cores; (b) runs
on one device, (c) in one process; (a) is also timed on one device. One XLA device may still run
independent operations on a second core, so (a) is timed once more on one device with every
thread of the process held to one core (Linux), and (c) on that same core:
``speedup_vs_sklearn_same_cores`` compares the two.

``pieces``: one configuration-generation cut into its pieces, each jitted alone and timed on that
core (median process CPU time per call, ms): drawing the ``n * K`` candidates, their rewards, the
curation, the refit (``EM_STEPS`` EM steps on the real and kept points), and the whole generation
(``sc.retrain_step`` and the recorded metric).

Compile time is reported apart from steady-state time ((a): the median of ``--repeats`` sweeps).
(c) is timed on a subset of configurations (``--sklearn-configs``) and scaled to the whole scan;
its per-configuration time does not depend on the seed.

    python benchmarks/bench_sweep.py [--quick] [--json results/sweep.json]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={os.cpu_count() or 1}").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from bench_curation import time_interleaved  # noqa: E402
from selfconsume import data, models, rewards  # noqa: E402

K, EM_STEPS, COMPONENTS, BETA = 4, 10, 8, 1.0


def problem(num_real: int):
    real, centers = data.gaussian_ring(jax.random.key(0), num_real)
    reward = rewards.distance(centers[0], scale=4.0, radius=0.1)
    return real, centers, reward


def bench_selfconsume(args, real, centers, reward, fractions):
    model = models.gmm(COMPONENTS, 2, em_steps=EM_STEPS)
    config = sc.LoopConfig(num_generations=args.generations, num_samples=args.num_samples, k=K)

    def metrics(state, info):
        return {"mode0_share": sc.metrics.mode_shares(info.kept.samples, centers)[0]}

    def one(key, real_fraction):
        key_init, key_run = jax.random.split(key)
        params0 = model.init(key_init, real)
        _, hist = sc.run(key_run, params0, real, sc.Hyperparams(beta=BETA,
                                                                real_fraction=real_fraction),
                         model=model, reward_fn=reward, config=config, metrics_fn=metrics,
                         default=False)
        return hist["mode0_share"]

    # (a) one compiled program for the whole grid, sharded over the devices (median of repeats),
    # and the same on one device: the comparison per core.
    def timed_sweep(devices):
        runs = []
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            result = sc.sweep(jax.random.key(1), one, num_seeds=args.seeds,
                              grid={"real_fraction": fractions}, devices=devices)
            wall = time.perf_counter() - t0
            runs.append(result.metadata["run_seconds"])
            if len(runs) == 1:
                out = {"compile_s": result.metadata["compile_seconds"], "wall_s": wall,
                       "devices": result.metadata["devices"]}
        return out | {"steady_s": statistics.median(runs), "min_s": min(runs)}, result

    a, result = timed_sweep(None)
    a1 = timed_sweep(jax.devices()[:1])[0] if len(jax.devices()) > 1 else dict(a)

    # (b) a Python loop over configurations, each a call of the jitted single-configuration run
    jitted = jax.jit(one)
    keys = jax.random.split(jax.random.key(1), args.seeds)
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(keys[0], jnp.float32(fractions[0])))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(args.seeds):
        for f in fractions:
            jax.block_until_ready(jitted(keys[s], jnp.float32(f)))
    steady_b = time.perf_counter() - t0
    b = {"compile_s": max(first - steady_b / (args.seeds * len(fractions)), 0.0),
         "steady_s": steady_b, "devices": 1}
    # (a) on one device with the process held to one core
    with one_core():
        a1c = timed_sweep(jax.devices()[:1])[0]
    return a, a1, a1c, b, result


@contextlib.contextmanager
def one_core():
    """Holds every thread of this process to one CPU (the first it may use) and restores the
    process's CPUs afterwards; yields that CPU, or ``None`` where affinity cannot be set (then
    nothing is held)."""
    tasks = "/proc/self/task"
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir(tasks):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    core = min(allowed)

    def hold(cpus):
        for tid in os.listdir(tasks):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)

    hold({core})
    try:
        yield core
    finally:
        hold(allowed)


def bench_pieces(args, real, centers, reward):
    """Median process CPU time (ms) of each piece of one configuration-generation, jitted alone
    and timed in turn (``bench_curation.time_interleaved``: all pieces see the same load).

    The generation starts from ``init`` on the real data, real fraction 0.25; the refit gets the
    real points and the kept samples (all ``num_real + num_samples`` points, weighted).
    """
    n, a = args.num_samples, 0.25
    model = models.gmm(COMPONENTS, 2, em_steps=EM_STEPS)
    config = sc.LoopConfig(num_generations=args.generations, num_samples=n, k=K)
    hyper = sc.Hyperparams(beta=BETA, real_fraction=a)
    key = jax.random.key(2)
    params = jax.jit(model.init)(jax.random.key(1), real)
    beta, num_candidates = jnp.float32(BETA), jnp.int32(K)

    draw = jax.jit(lambda k, p: model.sample(k, p, n * K))
    score = jax.jit(lambda x: reward(x))
    curate = jax.jit(lambda k, x, r, b, m: sc.curate(k, x, r, k=K, beta=b, num_candidates=m))
    candidates = draw(key, params)
    rewards_ = score(candidates)
    kept = curate(key, candidates, rewards_, beta, num_candidates)
    data_ = jnp.concatenate([real, kept.samples])
    weights = jnp.concatenate([jnp.full((real.shape[0],), a / real.shape[0]),
                               jnp.full((n,), (1 - a) / n)])

    def generation(k, state, h):
        state, info = sc.retrain_step(k, state, h, real, model=model, reward_fn=reward,
                                      config=config)
        return state, sc.metrics.mode_shares(info.kept.samples, centers)[0]

    state = sc.retrain.init_state(params, model=model, config=config, real_data=real)
    calls = {"draw": (draw, (key, params)), "reward": (score, (candidates,)),
             "curation": (curate, (key, candidates, rewards_, beta, num_candidates)),
             "fit": (jax.jit(model.fit), (key, params, data_, weights)),
             "generation": (jax.jit(generation), (key, state, hyper))}
    times = time_interleaved(list(calls.values()), max(args.repeats, 1) * 20)
    return {name: 1e3 * t["cpu_s"] for name, t in zip(calls, times)}


def curate_numpy(rng, candidates, r, k, beta):
    """Gumbel-max K-way curation in NumPy."""
    n = len(r) // k
    logits = beta * r.reshape(n, k)
    index = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return candidates.reshape(n, k, -1)[np.arange(n), index]


def reward_numpy(centers):
    """The benchmark's reward, ``-4 max(0, |x - c_0| - 0.1)``, in NumPy."""
    c0 = np.asarray(centers[0], np.float64)
    return lambda x: -4.0 * np.maximum(np.linalg.norm(x - c0, axis=1) - 0.1, 0.0)


def bench_sklearn(args, real, centers, fractions):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    real = np.asarray(real, np.float64)
    reward_np = reward_numpy(centers)
    configs = [(s, f) for s in range(args.seeds) for f in fractions][: args.sklearn_configs]
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: EM never "converges"
        t0 = time.perf_counter()
        for seed, a in configs:
            rng = np.random.default_rng(seed)
            gm = GaussianMixture(COMPONENTS, covariance_type="full", max_iter=EM_STEPS, tol=0.0,
                                 warm_start=True, random_state=seed).fit(real)
            for _ in range(args.generations):
                candidates, _ = gm.sample(args.num_samples * K)
                candidates = candidates[rng.permutation(len(candidates))]  # sorted by component
                kept = curate_numpy(rng, candidates, reward_np(candidates), K, BETA)
                num_real = min(int(round(a / (1 - a) * len(kept))), len(real)) if a < 1 else len(
                    real)
                train = np.concatenate([real[rng.choice(len(real), num_real, replace=False)], kept])
                gm.fit(train)
        elapsed = time.perf_counter() - t0
    return {"steady_s": elapsed * args.seeds * len(fractions) / len(configs), "devices": 1,
            "configs_timed": len(configs), "per_config_s": elapsed / len(configs)}


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=4096)
    p.add_argument("--num-real", type=int, default=None, help="real data points (default n)")
    p.add_argument("--sklearn-configs", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    p.set_defaults(repeats=3)
    args = p.parse_args()
    if args.smoke:
        args.seeds, args.generations, args.num_samples, args.sklearn_configs = 2, 2, 64, 1
        args.repeats = 1
    elif args.quick:
        args.seeds, args.generations, args.num_samples, args.sklearn_configs = 4, 5, 1024, 2
        args.repeats = 1
    args.num_real = args.num_real or args.num_samples
    fractions = [0.0, 0.1, 0.25, 0.5]
    real, centers, reward = problem(args.num_real)
    env = _common.environment()
    print(f"flagship scan on {env['device']} ({env['backend']}), jax {env['jax']}: "
          f"{args.seeds} seeds x {len(fractions)} fractions, {args.generations} generations, "
          f"{args.num_samples} kept samples, {args.num_real} real points, K={K}, {EM_STEPS} EM "
          f"steps; {env['num_devices']} device(s)")
    a, a1, a1c, b, result = bench_selfconsume(args, real, centers, reward, fractions)
    with one_core() as core:
        pieces = bench_pieces(args, real, centers, reward)
        c = bench_sklearn(args, real, centers, fractions)
    rows = [dict(method="sc.sweep (one program)", **a),
            dict(method="sc.sweep on one device", **a1),
            dict(method="sc.sweep on one core", **a1c),
            dict(method="loop of jitted sc.run", **b),
            dict(method="scikit-learn loop", compile_s=0.0, **c)]
    for row in rows:
        row["speedup_of_sweep"] = row["steady_s"] / a["steady_s"]
    print(_common.table(rows, [("method", ""), ("devices", ""), ("compile_s", ".2f"),
                               ("steady_s", ".2f"), ("speedup_of_sweep", ".1f")]))
    work = args.seeds * len(fractions) * args.generations
    print(f"throughput of (a): {work / a['steady_s']:.0f} configuration-generations per second")
    per_generation = {"sweep_one_core": 1e3 * a1c["steady_s"] / work,
                      "sklearn_one_core": 1e3 * c["steady_s"] / work}
    print(f"ms per configuration-generation on one core (CPU {core}): sc.sweep "
          f"{per_generation['sweep_one_core']:.2f}, scikit-learn "
          f"{per_generation['sklearn_one_core']:.2f}; pieces of one (ms CPU): " + ", ".join(
              f"{name} {ms:.3f}" for name, ms in pieces.items()))
    final_share = result.values[:, :, -1].mean(axis=0)
    print("final share of the rewarded mode, by real fraction:",
          dict(zip(fractions, np.round(final_share, 3).tolist())))
    _common.write_json(args.json, {
        "benchmark": "sweep", "environment": env, "settings": vars(args) | {"k": K},
        "rows": rows, "speedup_vs_sklearn": c["steady_s"] / a["steady_s"],
        "speedup_vs_loop": b["steady_s"] / a["steady_s"],
        "speedup_vs_sklearn_one_device": c["steady_s"] / a1["steady_s"],
        "speedup_vs_loop_one_device": b["steady_s"] / a1["steady_s"],
        "speedup_vs_sklearn_same_cores": c["steady_s"] / a1c["steady_s"],
        "one_core": core, "ms_per_config_generation": per_generation, "pieces": pieces,
        "config_generations_per_s": work / a["steady_s"],
        "targets": {"speedup_vs_sklearn": 30.0, "speedup_vs_loop": 5.0},
        "final_mode0_share": dict(zip(map(str, fractions), final_share.tolist()))})


if __name__ == "__main__":
    main()
