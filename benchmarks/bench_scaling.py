"""How does a sweep scale? Throughput against the number of configurations and of devices, and
the largest grid that fits in memory.

The work per configuration is the flagship loop of ``bench_sweep.py`` (8-mode ring, 8-component
GMM, K = 4, 10 EM steps per fit, real fraction swept) at a reduced size: ``--num-samples`` kept
samples (512) and ``--generations`` (5) per configuration.

1. Throughput, in configuration-generations per second, of ``sc.sweep`` from 1 to 4,096
   configurations (seeds x 4 real fractions), on the devices of this process.
2. The same for a fixed grid (``--device-configs``, 256) over 1, 2, 4 and 8 devices: on a CPU, XLA
   host devices, each count in a subprocess with
   ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (more host devices than cores only
   share the cores); on accelerators, the real devices, up to as many as there are.
3. Memory: the compiled program's own estimate (``compiled.memory_analysis()``: arguments,
   outputs, temporaries) at two batch sizes gives the bytes per configuration of the full-size
   flagship (4,096 kept samples, 20 generations); from it, the largest grid whose one compiled
   program fits in the memory available (no ``chunk_size``), and with ``chunk_size`` (only one
   chunk's working memory on the device; every configuration's outputs on the host). Estimated,
   never allocated.

    python benchmarks/bench_scaling.py [--quick] [--json results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import _common  # noqa: E402
import selfconsume as sc  # noqa: E402
from selfconsume import data, models, rewards  # noqa: E402

K, EM_STEPS, COMPONENTS, BETA = 4, 10, 8, 1.0
FRACTIONS = [0.0, 0.1, 0.25, 0.5]


def flagship(num_samples: int, generations: int):
    """``fn(key, real_fraction)``: one configuration of the flagship loop; returns the share of
    kept samples in the rewarded mode at every generation."""
    real, centers = data.gaussian_ring(jax.random.key(0), num_samples)
    reward = rewards.distance(centers[0], scale=4.0, radius=0.1)
    model = models.gmm(COMPONENTS, 2, em_steps=EM_STEPS)
    config = sc.LoopConfig(num_generations=generations, num_samples=num_samples, k=K)

    def metrics(state, info):
        return {"mode0_share": sc.metrics.mode_shares(info.kept.samples, centers)[0]}

    def fn(key, real_fraction):
        key_init, key_run = jax.random.split(key)
        params0 = model.init(key_init, real)
        _, hist = sc.run(key_run, params0, real,
                         sc.Hyperparams(beta=BETA, real_fraction=real_fraction), model=model,
                         reward_fn=reward, config=config, metrics_fn=metrics, default=False)
        return hist["mode0_share"]

    return fn


def throughput(fn, num_configs: int, generations: int, repeats: int, devices=None) -> dict:
    """Runs ``sc.sweep`` over ``num_configs`` configurations (seeds x the 4 fractions)."""
    seeds = max(num_configs // len(FRACTIONS), 1)
    grid = {"real_fraction": FRACTIONS if num_configs >= len(FRACTIONS) else FRACTIONS[:1]}
    runs = []
    for _ in range(repeats):
        meta = sc.sweep(jax.random.key(1), fn, num_seeds=seeds, grid=grid,
                        devices=devices).metadata
        runs.append(meta["run_seconds"])
    steady = sorted(runs)[len(runs) // 2]
    n = meta["num_configs"]
    return {"configs": n, "devices": meta["devices"], "compile_s": meta["compile_seconds"],
            "steady_s": steady, "config_generations_per_s": n * generations / steady}


def memory_per_config(fn, batches=(64, 128)) -> dict:
    """Bytes per configuration from the compiled program's memory analysis at two batch sizes."""
    sizes = []
    for b in batches:
        keys = jax.random.key_data(jax.random.split(jax.random.key(0), b))
        lowered = jax.jit(jax.vmap(lambda k, a: fn(jax.random.wrap_key_data(k), a))).lower(
            keys, jnp.zeros((b,), jnp.float32))
        m = lowered.compile().memory_analysis()
        sizes.append({"batch": b, "argument_bytes": m.argument_size_in_bytes,
                      "output_bytes": m.output_size_in_bytes, "temp_bytes": m.temp_size_in_bytes,
                      "total_bytes": m.argument_size_in_bytes + m.output_size_in_bytes
                      + m.temp_size_in_bytes})
    (b0, s0), (b1, s1) = [(s["batch"], s) for s in sizes]
    per = (s1["total_bytes"] - s0["total_bytes"]) / (b1 - b0)
    fixed = max(s0["total_bytes"] - per * b0, 0.0)
    out = (s1["output_bytes"] - s0["output_bytes"]) / (b1 - b0)
    return {"analyses": sizes, "bytes_per_config": per, "fixed_bytes": fixed,
            "output_bytes_per_config": out}


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; else 8 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def device_child(args) -> None:
    """Subprocess: one throughput figure on the devices of this process, as JSON on stdout."""
    fn = flagship(args.num_samples, args.generations)
    row = throughput(fn, args.device_configs, args.generations, args.repeats,
                     devices=jax.devices()[: args.num_devices])
    print("RESULT " + json.dumps(row))


def device_scan(args, counts) -> list[dict]:
    rows = []
    accelerators = jax.default_backend() != "cpu"
    for n in counts:
        if accelerators and n > len(jax.devices()):
            continue
        env = dict(os.environ)
        if not accelerators:
            flags = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                             if "xla_force_host_platform_device_count" not in f)
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--num-devices", str(n),
               "--num-samples", str(args.num_samples), "--generations", str(args.generations),
               "--device-configs", str(args.device_configs), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(f"device scan with {n} devices failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"  {n} device(s): {rows[-1]['config_generations_per_s']:.0f} config-gen/s",
              flush=True)
    return rows


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=512)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--device-configs", type=int, default=256)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-devices", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(repeats=3)
    args = p.parse_args()
    if args.child:
        return device_child(args)
    if args.smoke:
        args.num_samples, args.generations, args.device_configs, args.repeats = 64, 2, 8, 1
        configs, devices, flagship_size = [1, 8], [1, 2], (64, 2)
    elif args.quick:
        args.device_configs, args.repeats = 64, 1
        configs, devices, flagship_size = [1, 16, 256], [1, 2, 4], (1024, 5)
    else:
        configs, devices = [1, 4, 16, 64, 256, 1024, 4096], [1, 2, 4, 8]
        flagship_size = (4096, 20)
    env = _common.environment()
    print(f"sweep scaling on {env['device']} ({env['backend']}), jax {env['jax']}, {env['cpu']}; "
          f"{args.num_samples} kept samples x {args.generations} generations per configuration")

    fn = flagship(args.num_samples, args.generations)
    by_configs = []
    for n in configs:
        by_configs.append(throughput(fn, n, args.generations, args.repeats))
        print(f"  {n} configuration(s): "
              f"{by_configs[-1]['config_generations_per_s']:.0f} config-gen/s", flush=True)
    print(_common.table(by_configs, [("configs", ""), ("devices", ""), ("compile_s", ".2f"),
                                     ("steady_s", ".3f"), ("config_generations_per_s", ".0f")]))

    by_devices = device_scan(args, devices)
    print(_common.table(by_devices, [("devices", ""), ("configs", ""), ("steady_s", ".3f"),
                                     ("config_generations_per_s", ".0f")]))

    memory = memory_per_config(flagship(*flagship_size))
    avail = available_memory()
    budget = 0.5 * avail  # leave half of what is free to everything else
    memory |= {"flagship_size": {"num_samples": flagship_size[0],
                                 "generations": flagship_size[1]},
               "available_bytes": avail, "budget_bytes": budget,
               "max_configs_unchunked": int((budget - memory["fixed_bytes"])
                                            // memory["bytes_per_config"])}
    chunk = 64
    device_part = memory["fixed_bytes"] + chunk * memory["bytes_per_config"]
    memory["chunk_size"] = chunk
    memory["max_configs_chunked"] = int((budget - device_part)
                                        // max(memory["output_bytes_per_config"], 1.0))
    print(f"memory (flagship at {flagship_size[0]} samples x {flagship_size[1]} generations): "
          f"{memory['bytes_per_config'] / 2**20:.2f} MiB per configuration; of "
          f"{budget / 2**30:.1f} GiB (half the available), the largest grid is "
          f"{memory['max_configs_unchunked']} configurations in one program, "
          f"{memory['max_configs_chunked']} with chunk_size={chunk}")
    _common.write_json(args.json, {
        "benchmark": "scaling", "environment": env, "settings": vars(args),
        "by_configs": by_configs, "by_devices": by_devices, "memory": memory,
        "max_config_generations_per_s": max(r["config_generations_per_s"] for r in by_configs)})


if __name__ == "__main__":
    main()
