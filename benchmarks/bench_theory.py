"""How fast is the exact curated retraining map? Time against the support size M and K, and
against the Monte Carlo estimate of the same map.

The curation factor H is computed with a fixed number of quadrature nodes, so the cost should be
linear in M and flat in K. Prints a table of steady-state milliseconds per call (compile time
separately) and, with ``--json PATH``, writes the figures.

Monte Carlo comparison: the sample version of one map step draws ``n * K`` candidates from p,
curates them (``sc.curate``) and takes the histogram of the ``n`` kept states. Its total variation
error against the exact map falls as :math:`c \\sqrt{M / n}`; measured at one ``n``, this gives the
``n`` (and the time, linear in ``n``) needed to match the exact map's own float32 error (its total
variation distance to a float64 evaluation), and to reach a total variation of 0.01.

    python benchmarks/bench_theory.py [--quick] [--json results/theory.json]
"""

from __future__ import annotations

import functools
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from selfconsume import models, theory  # noqa: E402

BETA = 2.0


def problem(m: int):
    rng = np.random.default_rng(0)
    return rng.dirichlet(np.ones(m)), rng.normal(size=m)


def exact_rows(args, sizes, ks) -> list[dict]:
    rows = []
    for m in sizes:
        p64, r64 = problem(m)
        p, r = jnp.asarray(p64, jnp.float32), jnp.asarray(r64, jnp.float32)
        beta = jnp.float32(BETA)
        for k in ks:
            fn = jax.jit(functools.partial(theory.retrain_map, k=k))
            t = _common.time_compiled(lambda p, r, b: fn(p, r, beta=b), p, r, beta,
                                      repeats=args.repeats)
            mass = float(jnp.sum(p * theory.curation_factor(p, r, k=k, beta=beta)))
            rows.append({"M": m, "k": "inf" if math.isinf(k) else k,
                         "steady_ms": 1e3 * t["steady_s"], "cpu_ms": 1e3 * t["cpu_s"],
                         "compile_s": t["compile_s"], "ns_per_state": 1e9 * t["cpu_s"] / m,
                         "sum_pH": mass})
    return rows


def monte_carlo_rows(args, sizes, k: int, num_kept: int) -> list[dict]:
    rows = []
    for m in sizes:
        p64, r64 = problem(m)
        p, r = jnp.asarray(p64, jnp.float32), jnp.asarray(r64, jnp.float32)
        exact_fn = jax.jit(functools.partial(theory.retrain_map, k=k))
        exact = np.asarray(exact_fn(p, r, beta=jnp.float32(BETA)), np.float64)
        with jax.enable_x64(True):
            reference = np.asarray(theory.retrain_map(jnp.asarray(p64), jnp.asarray(r64), k=k,
                                                      beta=BETA))
        exact_tv = 0.5 * np.abs(exact - reference).sum()
        t_exact = _common.time_compiled(lambda p, r: exact_fn(p, r, beta=jnp.float32(BETA)),
                                        p, r, repeats=args.repeats)
        model = models.categorical(m)
        params = models.CategoricalParams(probs=p)

        @jax.jit
        def mc(key, params, r):
            key_draw, key_curate = jax.random.split(key)
            states = model.sample(key_draw, params, num_kept * k)
            kept = sc.curate(key_curate, states, r[states], k=k, beta=BETA).samples
            return jnp.bincount(kept, length=m) / num_kept

        t_mc = _common.time_compiled(mc, jax.random.key(0), params, r, repeats=args.repeats)
        mc_tv = 0.5 * np.abs(np.asarray(mc(jax.random.key(1), params, r), np.float64)
                             - reference).sum()
        # TV ~ c sqrt(M / n): the samples (and time) to reach a target TV scale as (TV / target)^2.
        def mc_time(target):
            return t_mc["cpu_s"] * (mc_tv / target) ** 2

        rows.append({"M": m, "k": k, "exact_ms": 1e3 * t_exact["cpu_s"], "exact_tv": exact_tv,
                     "mc_kept": num_kept, "mc_ms": 1e3 * t_mc["cpu_s"], "mc_tv": mc_tv,
                     "mc_s_at_exact_tv": mc_time(max(exact_tv, 1e-12)),
                     "mc_s_at_tv_0.01": mc_time(0.01),
                     "mc_over_exact_at_equal_accuracy":
                         mc_time(max(exact_tv, 1e-12)) / t_exact["cpu_s"],
                     "mc_over_exact_at_tv_0.01": mc_time(0.01) / t_exact["cpu_s"]})
    return rows


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = p.parse_args()
    if args.smoke:
        sizes, ks, mc_sizes, num_kept, args.repeats = [10**3], [math.inf], [10**3], 10**3, 1
    elif args.quick:
        sizes, ks, mc_sizes, num_kept = [10**3, 10**4], [2, 64, math.inf], [10**3], 10**5
    else:
        sizes, ks = [10**3, 10**4, 10**5, 10**6], [2, 4, 16, 64, 256, 1024, math.inf]
        mc_sizes, num_kept = [10**3, 10**4], 10**6
    env = _common.environment()
    print(f"exact curation map on {env['device']} ({env['backend']}), jax {env['jax']}, "
          f"{env['cpu']}")
    rows = exact_rows(args, sizes, ks)
    print(_common.table(rows, [("M", ""), ("k", ""), ("steady_ms", ".3f"), ("cpu_ms", ".3f"),
                               ("compile_s", ".2f"), ("ns_per_state", ".1f"),
                               ("sum_pH", ".7f")]))
    # Linear in M, flat in k: the spread of ns per state over k at the largest M, and its growth
    # with M at fixed k.
    largest = [r["ns_per_state"] for r in rows if r["M"] == sizes[-1] and r["k"] != "inf"]
    flat_in_k = max(largest) / min(largest) if largest else 1.0
    per_m = [np.median([r["ns_per_state"] for r in rows if r["M"] == m]) for m in sizes]
    print(f"ns per state at M={sizes[-1]}: max/min over finite k = {flat_in_k:.2f}; median ns per "
          f"state by M: {dict(zip(sizes, np.round(per_m, 1).tolist()))}")
    mc_rows = monte_carlo_rows(args, mc_sizes, 4, num_kept)
    print(_common.table(mc_rows, [("M", ""), ("k", ""), ("exact_ms", ".3f"), ("exact_tv", ".1e"),
                                  ("mc_kept", ""), ("mc_ms", ".1f"), ("mc_tv", ".1e"),
                                  ("mc_over_exact_at_equal_accuracy", ".1e"),
                                  ("mc_over_exact_at_tv_0.01", ".1f")]))
    _common.write_json(args.json, {"benchmark": "theory", "environment": env, "rows": rows,
                                   "flat_in_k_ratio": flat_in_k,
                                   "ns_per_state_by_M": dict(zip(map(str, sizes), per_m)),
                                   "monte_carlo": mc_rows})


if __name__ == "__main__":
    main()
