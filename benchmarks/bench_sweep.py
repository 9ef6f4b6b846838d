"""The flagship scan, three ways: one compiled sweep, a Python loop of jitted runs, scikit-learn.

The work: the 8-mode ring, an 8-component GMM, ``num_samples`` kept samples per generation,
K = 4, 20 generations, 10 EM steps per fit, 16 seeds x 4 real-data fractions (64 configurations).

(a) ``sc.sweep``: the 64 configurations as one compiled program;
(b) a Python loop over the configurations calling the jitted single-configuration ``sc.run``;
(c) scikit-learn's ``GaussianMixture`` (``max_iter`` = 10 EM steps, ``tol=0``, warm-started) with
    NumPy curation, in a Python loop. ``GaussianMixture`` takes no sample weights, so the
    ``replace`` refit on real fraction a uses all n kept samples plus round(a / (1 - a) * n) real
    points: the same weighting, by counts.

Compile time is reported apart from steady-state time. (c) is timed on a subset of configurations
(``--sklearn-configs``) and scaled to the whole scan; its per-configuration time does not depend
on the seed.

    python benchmarks/bench_sweep.py [--quick] [--json results/sweep.json]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
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

    # (a) one compiled program for the whole grid
    t0 = time.perf_counter()
    result = sc.sweep(jax.random.key(1), one, num_seeds=args.seeds,
                      grid={"real_fraction": fractions})
    wall_a = time.perf_counter() - t0
    a = {"compile_s": result.metadata["compile_seconds"],
         "steady_s": result.metadata["run_seconds"], "wall_s": wall_a}

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
         "steady_s": steady_b}
    return a, b, result


def curate_numpy(rng, candidates, r, k, beta):
    """Gumbel-max K-way curation in NumPy."""
    n = len(r) // k
    logits = beta * r.reshape(n, k)
    index = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return candidates.reshape(n, k, -1)[np.arange(n), index]


def bench_sklearn(args, real, reward, fractions):
    from sklearn.mixture import GaussianMixture

    real = np.asarray(real, np.float64)
    reward_np = lambda x: np.asarray(reward(jnp.asarray(x, jnp.float32)))  # noqa: E731
    configs = [(s, f) for s in range(args.seeds) for f in fractions][: args.sklearn_configs]
    t0 = time.perf_counter()
    for seed, a in configs:
        rng = np.random.default_rng(seed)
        gm = GaussianMixture(COMPONENTS, covariance_type="full", max_iter=EM_STEPS, tol=0.0,
                             warm_start=True, random_state=seed).fit(real)
        for _ in range(args.generations):
            candidates, _ = gm.sample(args.num_samples * K)
            candidates = candidates[rng.permutation(len(candidates))]  # sample() sorts by component
            kept = curate_numpy(rng, candidates, reward_np(candidates), K, BETA)
            num_real = int(round(a / (1 - a) * len(kept))) if a < 1 else len(real)
            train = np.concatenate([real[rng.choice(len(real), num_real, replace=False)], kept])
            gm.fit(train)
    elapsed = time.perf_counter() - t0
    per_config = elapsed / len(configs)
    return {"steady_s": per_config * args.seeds * len(fractions), "configs_timed": len(configs),
            "per_config_s": per_config}


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=4096)
    p.add_argument("--sklearn-configs", type=int, default=8)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.generations, args.num_samples, args.sklearn_configs = 4, 5, 1024, 2
    fractions = [0.0, 0.1, 0.25, 0.5]
    real, centers, reward = problem(max(2 * args.num_samples, 8192))
    env = _common.environment()
    print(f"flagship scan on {env['device']} ({env['backend']}), jax {env['jax']}: "
          f"{args.seeds} seeds x {len(fractions)} fractions, {args.generations} generations, "
          f"{args.num_samples} kept samples, K={K}, {EM_STEPS} EM steps")
    a, b, result = bench_selfconsume(args, real, centers, reward, fractions)
    c = bench_sklearn(args, real, reward, fractions)
    rows = [dict(method="sc.sweep (one program)", **a),
            dict(method="loop of jitted sc.run", **b),
            dict(method="scikit-learn loop", compile_s=0.0, **c)]
    for row in rows:
        row["speedup_of_sweep"] = row["steady_s"] / a["steady_s"]
    print(_common.table(rows, [("method", ""), ("compile_s", ".2f"), ("steady_s", ".2f"),
                               ("speedup_of_sweep", ".1f")]))
    final_share = result.values[:, :, -1].mean(axis=0)
    print("final share of the rewarded mode, by real fraction:",
          dict(zip(fractions, np.round(final_share, 3).tolist())))
    _common.write_json(args.json, {
        "benchmark": "sweep", "environment": env, "settings": vars(args) | {"k": K},
        "rows": rows, "speedup_vs_sklearn": c["steady_s"] / a["steady_s"],
        "speedup_vs_loop": b["steady_s"] / a["steady_s"]})


if __name__ == "__main__":
    main()
