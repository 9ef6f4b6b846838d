"""One study over several processes (jax.distributed): local processes on 127.0.0.1, CPU, gloo.

Two processes with two host devices each give the values of one process with four host devices
bit for bit (the same global layout: each device runs the same program on the same rows),
through the command line and through `sc.sweep` (a checkpointed sweep interrupted and continued,
with a checkpoint folder that only process 0 can see), and process 0 alone writes files.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from selfconsume import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--quick", "--quiet", "--set", "loop.checkpoint_every=1"]

# argv: process_id num_processes port folder. Runs the demo through the command line (which joins
# the processes), resumes the finished run, then a checkpointed sweep stopped after its first
# chunk and continued; process 0 saves what it got.
_CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    pid, n, port, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from selfconsume import cli
    join = [] if n == 1 else ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                              "--process-id", str(pid)]
    run = os.path.join(tmp, "run")
    status = [cli.main(["demo", "--out", run] + DEMO + join)]
    status.append(cli.main(["resume", run, "--quiet"] + join))
    import jax
    import selfconsume as sc
    from tests.test_execution import GRID, PROGRAM

    class Stop(Exception):
        pass

    def stop_after_first_chunk(done, total):
        if done >= 2:
            raise Stop

    folder = os.path.join(tmp, f"checkpoint-of-process-{pid}")  # not shared: 0 reads, 0 writes
    try:
        sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, chunk_generations=2,
                 checkpoint=folder, progress=stop_after_first_chunk)
    except Stop:
        pass
    result = sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID, chunk_generations=2,
                      checkpoint=folder)
    whole = sc.sweep(jax.random.key(3), PROGRAM, num_seeds=3, grid=GRID)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(result.values),
                                                    jax.tree.leaves(whole.values)))
    info = {"status": status, "devices": jax.device_count(), "processes": jax.process_count(),
            "continued_equals_whole": same, "metadata_processes": result.metadata["process_count"],
            "files": sorted(os.listdir(folder)) if os.path.isdir(folder) else None}
    with open(os.path.join(tmp, f"info-{pid}.json"), "w") as f:
        json.dump(info, f)
    if pid == 0:
        np.savez(os.path.join(tmp, "sweep.npz"), **result.values)
""").replace("DEMO", repr(DEMO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices_per_process: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(argv_of, num_processes: int, devices_per_process: int):
    return [subprocess.Popen(argv_of(i), cwd=ROOT, env=_env(devices_per_process),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(num_processes)]


def _wait(procs, timeout: float = 300):
    """Waits for every process; kills them all if one fails or the time runs out."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = [p.communicate()[0] for p in procs]
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{outputs[i][-4000:]}"


def _child(tmp, num_processes: int, devices_per_process: int):
    port = str(_free_port())
    return _start(lambda i: [sys.executable, "-c", _CHILD, str(i), str(num_processes), port,
                             str(tmp)], num_processes, devices_per_process)


def _infos(tmp, num_processes: int):
    infos = []
    for i in range(num_processes):
        with open(os.path.join(tmp, f"info-{i}.json")) as f:
            infos.append(json.load(f))
    return infos


def _assert_same_npz(a_path, b_path):
    with np.load(a_path) as a, np.load(b_path) as b:
        assert set(a.files) == set(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The child in one process with 4 devices and in 2 processes with 2 devices each, started
    together."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    procs = _child(one, 1, 4) + _child(two, 2, 2)
    _wait(procs)
    return (one, _infos(one, 1)), (two, _infos(two, 2))


def test_two_processes_equal_one_through_the_command_line(runs):
    (one, [info1]), (two, infos) = runs
    assert info1["status"] == [0, 0] and info1["devices"] == 4 and info1["processes"] == 1
    for info in infos:  # every process: the same exit status, the same global devices
        assert info["status"] == [0, 0] and info["devices"] == 4 and info["processes"] == 2
    _assert_same_npz(one / "run" / "results.npz", two / "run" / "results.npz")
    with open(one / "run" / "summary.json") as f, open(two / "run" / "summary.json") as g:
        a, b = json.load(f), json.load(g)
    assert a["claims"] == b["claims"] and a["grid"] == b["grid"]
    with open(two / "run" / "results.json") as f:
        assert json.load(f)["metadata"]["process_count"] == 2
    assert not [f for f in os.listdir(two / "run") if f.startswith(".") or f == "checkpoint.npz"]


def test_two_processes_equal_one_through_sweep(runs):
    """A checkpointed sweep stopped after its first chunk and continued equals the whole sweep in
    every process, and the 2-process values equal the 1-process ones. Process 1's checkpoint
    folder stays empty: process 0 reads and writes, and broadcasts what it read."""
    (one, [info1]), (two, infos) = runs
    assert info1["continued_equals_whole"]
    assert all(info["continued_equals_whole"] for info in infos)
    assert infos[0]["metadata_processes"] == 2
    assert infos[0]["files"] == ["checkpoint.npz"] and infos[1]["files"] is None
    _assert_same_npz(one / "sweep.npz", two / "sweep.npz")


def _cli(i, port, *args):
    return [sys.executable, "-m", "selfconsume.cli", *args, "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2", "--process-id", str(i)]


@pytest.mark.slow
def test_two_process_run_killed_and_resumed_equals_one_process(runs, tmp_path):
    """Both processes killed after the first checkpoint; `selfconsume resume` in two processes
    gives the uninterrupted one-process results bit for bit."""
    (one, _), _ = runs
    out = str(tmp_path / "killed")
    port = str(_free_port())
    procs = [subprocess.Popen(_cli(i, port, "demo", "--out", out, *DEMO), cwd=ROOT, env=_env(2),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(2)]
    checkpoint = os.path.join(out, "checkpoint.npz")
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.exists(checkpoint):
            with np.load(checkpoint) as z:
                if int(z["done"]) >= 1:
                    break
        time.sleep(0.01)
    assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not os.path.exists(os.path.join(out, "summary.json"))
    port = str(_free_port())
    _wait(_start(lambda i: _cli(i, port, "resume", out, "--quiet"), 2, 2))
    _assert_same_npz(os.path.join(out, "results.npz"), one / "run" / "results.npz")


@pytest.mark.parametrize("args, message", [
    (["--coordinator", "127.0.0.1:1234"], "`--num-processes` is needed"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2"], "`--process-id` is needed"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"],
     "`--coordinator` must be HOST:PORT"),
    (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"],
     "`--coordinator` must be HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
     "`--num-processes` must be an integer >= 1; got 0"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "`--process-id` must be in 0..1"),
])
def test_bad_process_options_exit_2(args, message, capsys, tmp_path):
    assert cli.main(["demo", "--out", str(tmp_path / "run")] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not os.path.exists(tmp_path / "run")
