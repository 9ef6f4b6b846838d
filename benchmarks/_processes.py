"""Starting benchmark processes: one child with its own environment, or N local processes that
form one ``jax.distributed`` job on 127.0.0.1.

A child prints one line ``RESULT <json>`` on stdout; :func:`result` returns it parsed. The
processes of a distributed job all receive ``--process-id i --num-processes N --port P`` and
connect to the coordinator at ``127.0.0.1:P`` (a port free when the job starts).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time

MARK = "RESULT "


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(base: dict | None = None, *, drop_xla_flags: tuple[str, ...] = (),
             xla_flags: tuple[str, ...] = (), **overrides: str | None) -> dict:
    """A copy of ``base`` (default ``os.environ``) with the XLA flags containing any of
    ``drop_xla_flags`` removed, ``xla_flags`` appended, and variables set (``None``: unset)."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not any(d in f for d in drop_xla_flags)]
    flags += list(xla_flags)
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def result(stdout: str) -> dict | None:
    """The last ``RESULT`` line of a child's output, parsed; None when there is none."""
    lines = [x for x in stdout.splitlines() if x.startswith(MARK)]
    return json.loads(lines[-1][len(MARK):]) if lines else None


def run_one(cmd: list[str], env: dict, timeout: float) -> dict:
    """Runs one child; returns ``{"rc", "stdout", "stderr", "wall_s", "timed_out"}``."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, timed_out = None, True
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    return {"rc": rc, "stdout": out, "stderr": err, "wall_s": time.perf_counter() - t0,
            "timed_out": timed_out}


def run_distributed(cmd: list[str], num_processes: int, env: dict, timeout: float) -> list[dict]:
    """Runs ``cmd + [--process-id i --num-processes N --port P]`` for i < N at once, as one
    ``jax.distributed`` job on 127.0.0.1; returns one :func:`run_one`-like dict per process.

    If a process fails or the job passes ``timeout`` seconds, the processes still running are
    terminated (their output so far is kept), so that none waits forever for a dead peer.
    """
    port = free_port()
    logs = []
    procs = []
    t0 = time.perf_counter()
    for i in range(num_processes):
        stdout = tempfile.TemporaryFile(mode="w+")
        stderr = tempfile.TemporaryFile(mode="w+")
        logs.append((stdout, stderr))
        procs.append(subprocess.Popen(
            cmd + ["--process-id", str(i), "--num-processes", str(num_processes),
                   "--port", str(port)], env=env, stdout=stdout, stderr=stderr, text=True))
    timed_out = False
    while any(p.poll() is None for p in procs):
        failed = any(p.poll() not in (None, 0) for p in procs)
        if failed or time.perf_counter() - t0 > timeout:
            timed_out = not failed
            time.sleep(0 if timed_out else 2.0)  # let a failing peer finish writing its error
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    rows = []
    for p, (stdout, stderr) in zip(procs, logs):
        stdout.seek(0)
        stderr.seek(0)
        rows.append({"rc": p.returncode, "stdout": stdout.read(), "stderr": stderr.read(),
                     "wall_s": wall, "timed_out": timed_out})
        stdout.close()
        stderr.close()
    return rows
