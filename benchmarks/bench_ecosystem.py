"""What does an ecosystem cost? A generation of M coupled models against one model's.

Two sections (``--section``, default both), timed in process CPU time (the median of
``--repeats`` steady-state calls after a first, compiling call, reported apart as
``compile_s``); the programs run in rounds, interleaved, so that each ratio compares calls made
under the same load (``_common`` and ``bench_curation.time_interleaved``).

* ``loop``: jitted ``sc.run`` of ``T`` generations against jitted ``sc.ecosystem.run`` of M
  models for M in ``MODELS`` (``W = sc.ecosystem.coupling(M, 0.5)``, model 0 curated with
  beta = 1 and the others with beta = 0, 10% real data), on the flagship (8-mode ring,
  8-component GMM with 10 EM steps, K = 4) and on the categorical model on 256 states.
  ``per_model_ratio`` is (ecosystem time / M) / single-model time: 1 when an ecosystem costs M
  single loops. Each model refits on the real data and all M x n kept samples (its row of W
  weights them), so the fit grows with M; drawing and curating do not.
* ``theory``: ``sc.theory.ecosystem_trajectory`` of M models on S states (K = 4, Luce) per
  generation, against ``sc.theory.trajectory`` of one model (``per_model_ratio`` likewise).

    python benchmarks/bench_ecosystem.py [--quick] [--json results/ecosystem.json]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from bench_curation import paired_ratio, time_interleaved  # noqa: E402
from selfconsume import data, rewards  # noqa: E402

K = 4
SIZES = {  # smoke, quick, full
    "generations": (2, 5, 10),
    "num_samples": (128, 1024, 4096),
    "models": ((1, 2), (1, 2, 4, 8), (1, 2, 4, 8, 16)),
    "states": ((64,), (256, 4096), (256, 4096, 65536)),
    "traj_generations": (2, 10, 20),
    "repeats": (1, 3, 5),
}


class StateReward:
    """A fixed reward per state (hashable by identity, as ``reward_fn`` must be)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, x):
        return self.table[x]


def problems(num_samples):
    real, centers = data.gaussian_ring(jax.random.key(0), 8192)
    gmm = sc.models.get("gmm", num_components=8, dim=2, em_steps=10)
    rng = np.random.default_rng(0)
    states = jnp.asarray(rng.choice(256, size=8192, p=rng.dirichlet(np.ones(256))), jnp.int32)
    cat = sc.models.categorical(256)
    return {
        "gmm": (gmm, real, rewards.distance(centers[0], scale=4.0, radius=0.1)),
        "categorical(256)": (cat, states,
                             StateReward(jnp.asarray(rng.normal(size=256), jnp.float32))),
    }


def loop_programs(model, reward, config):
    def single(key, params0, real, hyper):
        final, hist = sc.run(key, params0, real, hyper, model=model, reward_fn=reward,
                             config=config)
        return final.params, hist

    def ecosystem(key, params0, real, hyper, w):
        final, hist = sc.ecosystem.run(key, params0, real, hyper, model=model, reward_fn=reward,
                                       config=config, interaction=w)
        return final.params, hist

    return jax.jit(single), jax.jit(ecosystem)


def bench_loop(args, sizes):
    t_gen = sizes["generations"]
    config = sc.LoopConfig(num_generations=t_gen, num_samples=sizes["num_samples"], k=K)
    key = jax.random.key(2)
    rows = []
    for name, (model, real, reward) in problems(sizes["num_samples"]).items():
        single, ecosystem = loop_programs(model, reward, config)
        params0 = model.init(jax.random.key(1), real)
        calls = [(single, (key, params0, real, sc.Hyperparams(beta=1.0, real_fraction=0.1)))]
        for m in sizes["models"]:
            stacked = jax.tree.map(lambda x, m=m: jnp.stack([x] * m), params0)
            beta = jnp.asarray([1.0] + [0.0] * (m - 1), jnp.float32)
            hyper = sc.Hyperparams(beta=beta, real_fraction=0.1)
            calls.append((ecosystem, (key, stacked, real, hyper, sc.ecosystem.coupling(m, 0.5))))
        times = time_interleaved(calls, sizes["repeats"])
        base = times[0]
        for m, t in zip(sizes["models"], times[1:]):
            row = {"problem": name, "models": m, "generations": t_gen,
                   "num_samples": sizes["num_samples"],
                   "single_s_per_generation": base["cpu_s"] / t_gen,
                   "s_per_generation": t["cpu_s"] / t_gen, "compile_s": t["compile_s"],
                   "per_model_ratio": paired_ratio(t, base) / m}
            rows.append(row)
            print(f"  loop {name:17s} M={m:3d}  {row['s_per_generation'] * 1e3:9.2f} ms/gen  "
                  f"single {row['single_s_per_generation'] * 1e3:8.2f} ms/gen  per model x "
                  f"{row['per_model_ratio']:.2f}", flush=True)
    return rows


def bench_theory(args, sizes):
    t_gen = sizes["traj_generations"]
    rows = []
    for s in sizes["states"]:
        rng = np.random.default_rng(s)
        p0 = jnp.asarray(rng.dirichlet(np.ones(s)), jnp.float32)
        r = jnp.asarray(rng.normal(size=s), jnp.float32)

        def single(p0, r):
            return sc.theory.trajectory(p0, r, num_generations=t_gen, k=K, beta=1.0,
                                        p_data=p0, real_fraction=0.1)

        def eco(ps0, r, w, beta):
            return sc.theory.ecosystem_trajectory(ps0, r, num_generations=t_gen, interaction=w,
                                                  k=K, beta=beta, p_data=ps0[0],
                                                  real_fraction=0.1)

        calls = [(jax.jit(single), (p0, r))]
        eco_jit = jax.jit(eco)
        for m in sizes["models"]:
            beta = jnp.asarray([1.0] + [0.0] * (m - 1), jnp.float32)
            calls.append((eco_jit, (jnp.stack([p0] * m), r, sc.ecosystem.coupling(m, 0.5),
                                    beta)))
        times = time_interleaved(calls, sizes["repeats"])
        for m, t in zip(sizes["models"], times[1:]):
            row = {"states": s, "models": m, "generations": t_gen,
                   "single_s_per_generation": times[0]["cpu_s"] / t_gen,
                   "s_per_generation": t["cpu_s"] / t_gen, "compile_s": t["compile_s"],
                   "per_model_ratio": paired_ratio(t, times[0]) / m}
            rows.append(row)
            print(f"  theory S={s:6d} M={m:3d}  {row['s_per_generation'] * 1e3:9.3f} ms/gen  "
                  f"single {row['single_s_per_generation'] * 1e3:8.3f} ms/gen  per model x "
                  f"{row['per_model_ratio']:.2f}", flush=True)
    return rows


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's check)")
    p.add_argument("--section", choices=("loop", "theory"), default=None)
    args = p.parse_args(argv)
    level = 0 if args.smoke else 1 if args.quick else 2
    sizes = {k: v[level] for k, v in SIZES.items()}
    if args.repeats != 5:
        sizes["repeats"] = args.repeats
    out = {"environment": _common.environment(), "sizes": sizes}
    print(f"bench_ecosystem ({['smoke', 'quick', 'full'][level]}) on "
          f"{out['environment']['device']}")
    if args.section in (None, "loop"):
        out["loop"] = bench_loop(args, sizes)
    if args.section in (None, "theory"):
        out["theory"] = bench_theory(args, sizes)
    if args.json:
        _common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
