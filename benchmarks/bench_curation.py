"""What does curation cost on top of drawing the candidates? Throughput up to 10^7 candidates.

For N x K candidates drawn from a model (the flagship's 8-component GMM in 2-D, and a categorical
model on 1,000 states), times three jitted programs in the same run:

* ``draw``: ``model.sample`` of N x K candidates;
* ``draw+curate``: the same draw, then ``sc.curate`` keeps N of them (the rewards are an input, so
  that the reward function's cost, which is the user's, is left out);
* each candidate sampler alone on the same rewards: inverse CDF with one uniform per group (what
  ``sc.curate`` uses), Gumbel-max (K uniforms and two logarithms per group), and
  ``jax.random.categorical`` (Gumbel-max inside JAX).

``curation_overhead`` is the ratio of ``draw+curate`` to ``draw`` time (target: at most 1.5) at the
largest size, for the GMM, worst K. Times are process CPU time per call (median of ``--repeats``):
each program runs on one core, and CPU time does not count the waits when other work shares the
machine (the wall-clock times are in the JSON too). The limit is random-number generation: the
last columns give the time of merely generating the random 32-bit words each program consumes
(threefry), and the fraction of the program's time that this accounts for.

    python benchmarks/bench_curation.py [--quick] [--json results/curation.json]
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
from selfconsume import _choice, data, models  # noqa: E402

BETA = 1.0
CLOCK = "cpu_s"  # one device, one core: CPU time is robust to other work on the machine


def gumbel_max(key, logits):
    """K uniforms per group: argmax of logits plus Gumbel noise."""
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jnp.argmax(logits + noise, axis=-1).astype(jnp.int32)


def categorical(key, logits):
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


SAMPLERS = {"inverse_cdf": _choice.inverse_cdf_choice, "gumbel_max": gumbel_max,
            "categorical": categorical}


def model_and_params(name):
    if name == "gmm":
        real, _ = data.gaussian_ring(jax.random.key(0), 4096)
        model = models.gmm(8, 2, em_steps=10)
        return model, model.init(jax.random.key(1), real)
    model = models.categorical(1000)
    states = jax.random.randint(jax.random.key(0), (4096,), 0, 1000)
    return model, model.init(jax.random.key(1), states)


def words_per_candidate(name, k):
    """32-bit random words used per candidate: the draw's, and curation's (one per group)."""
    return (3 if name == "gmm" else 1), 1.0 / k


def bench(args, name, n, k):
    model, params = model_and_params(name)
    total = n * k
    key = jax.random.key(2)
    rewards = jax.random.normal(jax.random.key(3), (total,))

    draw = jax.jit(lambda key: model.sample(key, params, total))

    def draw_and_curate(key, rewards):
        key_draw, key_curate = jax.random.split(key)
        x = model.sample(key_draw, params, total)
        return sc.curate(key_curate, x, rewards, k=k, beta=BETA).samples

    t_draw = _common.time_compiled(draw, key, repeats=args.repeats)
    t_both = _common.time_compiled(jax.jit(draw_and_curate), key, rewards, repeats=args.repeats)
    bits = _common.time_compiled(jax.jit(lambda key: jax.random.bits(key, (total,))), key,
                                 repeats=args.repeats)
    draw_words, curate_words = words_per_candidate(name, k)
    row = {"model": name, "N": n, "K": k, "candidates": total,
           "draw_ms": 1e3 * t_draw[CLOCK], "draw_curate_ms": 1e3 * t_both[CLOCK],
           "curation_overhead": t_both[CLOCK] / t_draw[CLOCK],
           "curated_candidates_per_s": total / t_both[CLOCK],
           "rng_ns_per_word": 1e9 * bits[CLOCK] / total,
           "draw_wall_ms": 1e3 * t_draw["steady_s"],
           "draw_curate_wall_ms": 1e3 * t_both["steady_s"], "compile_s": t_both["compile_s"]}
    words = (draw_words + curate_words) * total
    row["rng_fraction"] = min(words * row["rng_ns_per_word"] * 1e-9 / t_both[CLOCK], 1.0)
    # The samplers alone, on the same rewards (curation without the draw).
    logits = jax.jit(lambda r: _choice.group_logits(r.reshape(n, k), BETA))(rewards)
    for sampler, fn in SAMPLERS.items():
        t = _common.time_compiled(jax.jit(fn), key, logits, repeats=args.repeats)
        row[f"{sampler}_ms"] = 1e3 * t[CLOCK]
    return row


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = p.parse_args()
    if args.smoke:
        sizes, ks, names, args.repeats = [10**3], [4], ["gmm"], 1
    elif args.quick:
        sizes, ks, names, args.repeats = [10**5, 10**6], [4, 64], ["gmm", "categorical"], 3
    else:
        sizes, ks, names = [10**5, 10**6, 10**7], [2, 4, 16, 64], ["gmm", "categorical"]
    env = _common.environment()
    print(f"curation on {env['device']} ({env['backend']}), jax {env['jax']}, {env['cpu']}")
    rows = []
    for name in names:
        for total in sizes:
            for k in ks:
                rows.append(bench(args, name, total // k, k))
                print(f"  {name} N*K={total} K={k}: overhead {rows[-1]['curation_overhead']:.2f}",
                      flush=True)
    print(_common.table(rows, [
        ("model", ""), ("candidates", ""), ("K", ""), ("draw_ms", ".2f"),
        ("draw_curate_ms", ".2f"), ("curation_overhead", ".2f"), ("inverse_cdf_ms", ".2f"),
        ("gumbel_max_ms", ".2f"), ("categorical_ms", ".2f"), ("rng_fraction", ".2f")]))
    largest = max(r["candidates"] for r in rows)
    head = [r for r in rows if r["model"] == "gmm" and r["candidates"] == largest]
    overhead = max(r["curation_overhead"] for r in head)
    speed = {s: float(np.median([r["gumbel_max_ms"] / r[f"{s}_ms"] for r in rows]))
             for s in SAMPLERS}
    print(f"curation_overhead (GMM, {largest} candidates, worst K): {overhead:.2f} (target <= 1.5)")
    print("median speed of each sampler relative to Gumbel-max:",
          {s: round(v, 2) for s, v in speed.items()})
    _common.write_json(args.json, {
        "benchmark": "curation", "environment": env, "settings": vars(args), "rows": rows,
        "curation_overhead": overhead, "target": {"curation_overhead": 1.5},
        "sampler_speed_vs_gumbel_max": speed, "sampler": "inverse_cdf"})


if __name__ == "__main__":
    main()
