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

**Per curator family** (section ``curators``): for K in 2, 4, 16, 64 and n = 4,096 groups
(``--quick``: 1,024), times

* ``draw``: drawing the n x K candidates from the flagship model (the 8-component GMM fitted on the
  ring) and their reward (the flagship's distance reward to one mode; two columns, distances to
  two opposite modes, for the mixture);
* ``curate``: ``sc.curate(key, candidates, rewards, k=K, curator=c)`` alone on those candidates,
  for ``luce(1)``, ``top_m(2, 1)``, ``top_m(K // 2, 1)``, ``thurstone(1)``, ``adversarial(luce(1),
  0.25)``, ``mixture`` of two ``luce(1)`` on the two reward columns, ``sequential(top_m(2, 1),
  luce(1))`` and ``top_fraction()``;
* ``draw+curate``: both in one program.

The three programs run in turn, ``--repeats`` rounds (at least 15: they take milliseconds) after
a first, compiling call of each; times are the median CPU time per call, and ``ratio`` = curate /
draw is the median over rounds of the ratio within a round (both under the same load). Target:
``ratio`` at most 1.5 for every family at every K <= 64 (``max_ratio`` in the JSON);
``overhead`` = (draw+curate) / draw, paired the same way, is reported beside it.

    python benchmarks/bench_curation.py [--quick] [--json results/curation.json]
    python benchmarks/bench_curation.py --section curators   # the per-curator section only
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from selfconsume import _choice, curators, data, models, rewards  # noqa: E402

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


@functools.lru_cache(maxsize=None)
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


CURATOR_TARGET = 1.5  # curate / draw, every family, K <= 64


def curator_families(k):
    """The curators timed per family (rates fixed; ``top_m_half`` keeps K // 2 of each group)."""
    c = curators
    return {
        "luce": c.luce(BETA),
        "top_m": c.top_m(min(2, k), BETA),
        "top_m_half": c.top_m(max(k // 2, 1), BETA),
        "thurstone": c.thurstone(1.0),
        "adversarial": c.adversarial(c.luce(BETA), 0.25),
        "mixture": c.mixture([c.luce(BETA, column=0), c.luce(BETA, column=1)], [0.5, 0.5]),
        "sequential": c.sequential(c.top_m(min(2, k), BETA), c.luce(BETA)),
        "top_fraction": c.top_fraction(),
    }


def flagship_draw(total, columns):
    """``draw(key) -> (candidates, rewards)``: the GMM fitted on the ring and the flagship's
    distance reward to mode 0 (``columns = 2``: also to mode 4, the opposite one)."""
    model, params = model_and_params("gmm")
    _, centers = data.gaussian_ring(jax.random.key(0), 8)
    reward = [rewards.distance(centers[i], scale=4.0, radius=0.1) for i in (0, 4)][:columns]

    def draw(key):
        x = model.sample(key, params, total)
        r = reward[0](x) if columns == 1 else jnp.stack([f(x) for f in reward], axis=1)
        return x, r

    return draw


def time_interleaved(calls, repeats):
    """Times jitted ``fn(*args)`` for each ``(fn, args)`` of ``calls`` in turn, ``repeats``
    rounds after a first (compiling) call of each, so that all see the same load on the machine.

    Returns, per call, ``_common.time_compiled``'s figures and the list of CPU seconds per round
    (``cpu_runs``), for ratios paired round by round.
    """
    firsts = []
    for fn, args in calls:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        firsts.append(time.perf_counter() - t0)
    walls, cpus = [[] for _ in calls], [[] for _ in calls]
    for _ in range(max(repeats, 1)):
        for i, (fn, args) in enumerate(calls):
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(fn(*args))
            walls[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    out = []
    for first, wall, cpu in zip(firsts, walls, cpus):
        steady = statistics.median(wall)
        out.append({"compile_s": max(first - steady, 0.0), "steady_s": steady, "min_s": min(wall),
                    "cpu_s": statistics.median(cpu), "cpu_runs": cpu})
    return out


def paired_ratio(a, b):
    """Median over rounds of a's CPU time over b's (same round: same load)."""
    return statistics.median(x / y for x, y in zip(a["cpu_runs"], b["cpu_runs"]))


def bench_curators(args, n, ks):
    """{family: {K: times and ratios}}: each curator against drawing its candidates."""
    repeats = max(args.repeats, 15) if not args.smoke else 1
    key = jax.random.key(2)
    out = {}
    for k in ks:
        total = n * k
        draws = {}
        for columns in (1, 2):
            draw = flagship_draw(total, columns)
            draw_jit = jax.jit(draw)
            draws[columns] = (draw, draw_jit, draw_jit(key))
        for name, curator in curator_families(k).items():
            columns = 1 + max(c or 0 for c in curator.columns())
            draw, draw_jit, (x, r) = draws[columns]

            def curate(key, x, r, curator=curator):
                return sc.curate(key, x, r, k=k, curator=curator)

            def draw_and_curate(key, draw=draw, curator=curator):
                key_draw, key_curate = jax.random.split(key)
                x, r = draw(key_draw)
                return sc.curate(key_curate, x, r, k=k, curator=curator).samples

            t_draw, t_cur, t_both = time_interleaved(
                [(draw_jit, (key,)), (jax.jit(curate), (key, x, r)),
                 (jax.jit(draw_and_curate), (key,))], repeats)
            ratio = paired_ratio(t_cur, t_draw)
            out.setdefault(name, {})[str(k)] = {
                "N": n, "K": k, "candidates": total, "reward_columns": columns,
                "draw_ms": 1e3 * t_draw[CLOCK], "curate_ms": 1e3 * t_cur[CLOCK],
                "draw_curate_ms": 1e3 * t_both[CLOCK], "ratio": ratio,
                "within_target": bool(ratio <= CURATOR_TARGET),
                "overhead": paired_ratio(t_both, t_draw),
                "draw_wall_ms": 1e3 * t_draw["steady_s"],
                "curate_wall_ms": 1e3 * t_cur["steady_s"],
                "curate_compile_s": t_cur["compile_s"], "repeats": repeats}
            print(f"  {name} K={k}: draw {1e3 * t_draw[CLOCK]:.3f} ms, curate "
                  f"{1e3 * t_cur[CLOCK]:.3f} ms, ratio {ratio:.2f}", flush=True)
    return out


def curator_tables(results, ks):
    """Text tables, family by K: ratio curate / draw, overhead (draw+curate) / draw, and the
    times (curate ms / draw ms, the draw timed beside that family)."""
    ratio_rows, over_rows, ms_rows = [], [], []
    for name, by_k in results.items():
        ratio_rows.append({"family": name, **{f"K={k}": by_k[str(k)]["ratio"] for k in ks},
                           "max": max(v["ratio"] for v in by_k.values()),
                           "ok": "yes" if all(v["within_target"] for v in by_k.values())
                           else "no"})
        over_rows.append({"family": name, **{f"K={k}": by_k[str(k)]["overhead"] for k in ks}})
        ms_rows.append({"family": name, **{
            f"K={k}": f"{by_k[str(k)]['curate_ms']:.3f} / {by_k[str(k)]['draw_ms']:.3f}"
            for k in ks}})
    cols = [(f"K={k}", ".2f") for k in ks]
    return (_common.table(ratio_rows, [("family", "")] + cols + [("max", ".2f"), ("ok", "")]),
            _common.table(over_rows, [("family", "")] + cols),
            _common.table(ms_rows, [("family", "")] + [(f"K={k}", "") for k in ks]))


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    p.add_argument("--section", choices=["all", "throughput", "curators"], default="all",
                   help="run only the throughput section or only the per-curator section")
    args = p.parse_args()
    if args.smoke:
        sizes, ks, names, args.repeats = [10**3], [4], ["gmm"], 1
        groups, curator_ks = 64, [4]
    elif args.quick:
        sizes, ks, names, args.repeats = [10**5, 10**6], [4, 64], ["gmm", "categorical"], 3
        groups, curator_ks = 1024, [2, 4, 16, 64]
    else:
        sizes, ks, names = [10**5, 10**6, 10**7], [2, 4, 16, 64], ["gmm", "categorical"]
        groups, curator_ks = 4096, [2, 4, 16, 64]
    env = _common.environment()
    print(f"curation on {env['device']} ({env['backend']}), jax {env['jax']}, {env['cpu']}, "
          f"load average {env['load_average_1min']}")
    payload = {"benchmark": "curation", "environment": env, "settings": vars(args)}
    if args.section in ("all", "throughput"):
        rows = []
        for name in names:
            for total in sizes:
                for k in ks:
                    rows.append(bench(args, name, total // k, k))
                    print(f"  {name} N*K={total} K={k}: overhead "
                          f"{rows[-1]['curation_overhead']:.2f}", flush=True)
        print(_common.table(rows, [
            ("model", ""), ("candidates", ""), ("K", ""), ("draw_ms", ".2f"),
            ("draw_curate_ms", ".2f"), ("curation_overhead", ".2f"), ("inverse_cdf_ms", ".2f"),
            ("gumbel_max_ms", ".2f"), ("categorical_ms", ".2f"), ("rng_fraction", ".2f")]))
        largest = max(r["candidates"] for r in rows)
        head = [r for r in rows if r["model"] == "gmm" and r["candidates"] == largest]
        overhead = max(r["curation_overhead"] for r in head)
        speed = {s: float(np.median([r["gumbel_max_ms"] / r[f"{s}_ms"] for r in rows]))
                 for s in SAMPLERS}
        print(f"curation_overhead (GMM, {largest} candidates, worst K): {overhead:.2f} "
              f"(target <= 1.5)")
        print("median speed of each sampler relative to Gumbel-max:",
              {s: round(v, 2) for s, v in speed.items()})
        payload.update({"rows": rows, "curation_overhead": overhead,
                        "target": {"curation_overhead": 1.5},
                        "sampler_speed_vs_gumbel_max": speed, "sampler": "inverse_cdf"})
    if args.section in ("all", "curators"):
        print(f"per curator: {groups} groups, K in {curator_ks}, GMM draw + reward")
        results = bench_curators(args, groups, curator_ks)
        ratios, overheads, times = curator_tables(results, curator_ks)
        print("ratio curate / draw (CPU time; target <= 1.5):")
        print(ratios)
        print("overhead (draw+curate) / draw:")
        print(overheads)
        print("curate ms / draw ms per call (CPU time):")
        print(times)
        worst = max(((name, k) for name, by_k in results.items() for k in by_k),
                    key=lambda nk: results[nk[0]][nk[1]]["ratio"])
        max_ratio = results[worst[0]][worst[1]]["ratio"]
        print(f"max_ratio: {max_ratio:.2f} ({worst[0]}, K={worst[1]}), target <= "
              f"{CURATOR_TARGET}")
        payload.update({"curators": results, "curator_groups": groups, "max_ratio": max_ratio,
                        "max_ratio_at": {"family": worst[0], "K": int(worst[1])},
                        "max_ratio_within_target": bool(max_ratio <= CURATOR_TARGET),
                        "load_average_1min_end": os.getloadavg()[0]})
        payload.setdefault("target", {})["max_ratio"] = CURATOR_TARGET
    _common.write_json(args.json, payload)


if __name__ == "__main__":
    main()
