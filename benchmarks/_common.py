"""Shared helpers for the benchmark scripts: timing, environment description, JSON output."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    p.add_argument("--repeats", type=int, default=5, help="steady-state repetitions")
    return p


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Device, versions and host: what the figures were measured on."""
    import flax
    import numpy
    import optax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device": devices[0].device_kind,
        "num_devices": len(devices),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "date": datetime.date.today().isoformat(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def time_compiled(fn, *args, repeats: int = 5) -> dict:
    """Times ``fn(*args)`` (a jitted function): the first call (compile + run) and the median of
    ``repeats`` steady-state calls, each synchronised with ``block_until_ready``.

    Returns wall-clock seconds (``steady_s``, ``min_s``, ``compile_s``) and the median process CPU
    seconds per call (``cpu_s``). A program on one CPU device runs on one core, so on a machine
    shared with other work its CPU time is the steadier measure of its cost.
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    runs, cpus = [], []
    for _ in range(max(repeats, 1)):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    steady = statistics.median(runs)
    return {"compile_s": max(first - steady, 0.0), "steady_s": steady, "min_s": min(runs),
            "cpu_s": statistics.median(cpus)}


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Formats rows as a fixed-width text table; ``columns`` is a list of (key, format)."""
    cells = [[format(row[key], fmt) if fmt else str(row[key]) for key, fmt in columns]
             for row in rows]
    heads = [key for key, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_json(path: str | None, payload: dict) -> None:
    """Writes ``payload`` atomically (temporary file in the same folder, then rename)."""
    if not path:
        return
    from selfconsume.files import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: json.dump(payload, f, indent=2), binary=False)
    print(f"wrote {path}")
