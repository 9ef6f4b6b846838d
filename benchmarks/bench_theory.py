"""How fast is the exact curated retraining map? Time against the support size M and K.

The curation factor H is computed with a fixed number of quadrature nodes, so the cost should be
linear in M and flat in K. Prints a table of steady-state milliseconds per call (compile time
separately) and, with ``--json PATH``, writes the figures.

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
from selfconsume import theory  # noqa: E402


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    sizes = [10**3, 10**4] if args.quick else [10**3, 10**4, 10**5, 10**6]
    ks = [2, 64, math.inf] if args.quick else [2, 4, 16, 64, 256, 1024, math.inf]
    env = _common.environment()
    print(f"exact curation map on {env['device']} ({env['backend']}), jax {env['jax']}")
    rows = []
    for m in sizes:
        rng = np.random.default_rng(0)
        p = jnp.asarray(rng.dirichlet(np.ones(m)), jnp.float32)
        r = jnp.asarray(rng.normal(size=m), jnp.float32)
        beta = jnp.float32(2.0)
        for k in ks:
            fn = jax.jit(functools.partial(theory.retrain_map, k=k))
            t = _common.time_compiled(lambda p, r, b: fn(p, r, beta=b), p, r, beta,
                                      repeats=args.repeats)
            mass = float(jnp.sum(p * theory.curation_factor(p, r, k=k, beta=beta)))
            rows.append({"M": m, "k": "inf" if math.isinf(k) else k,
                         "steady_ms": 1e3 * t["steady_s"], "compile_s": t["compile_s"],
                         "ns_per_state": 1e9 * t["steady_s"] / m, "sum_pH": mass})
    print(_common.table(rows, [("M", ""), ("k", ""), ("steady_ms", ".3f"), ("compile_s", ".2f"),
                               ("ns_per_state", ".1f"), ("sum_pH", ".7f")]))
    _common.write_json(args.json, {"benchmark": "theory", "environment": env, "rows": rows})


if __name__ == "__main__":
    main()
