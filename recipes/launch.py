"""Start a recipe as N cooperating JAX processes (one host here; copy it for many hosts).

    python -m recipes.launch --num-processes 2 -- recipes.demo --steps 10 ...
    python -m recipes.launch --num-processes 2 --devices-per-process 2 -- path/to/script.py

Each child runs with ``RGFT_COORDINATOR`` (``host:port`` of process 0), ``RGFT_NUM_PROCESSES``
and ``RGFT_PROCESS_ID`` set, calls ``jax.distributed.initialize`` with them and then runs the
module (``-m`` style, ``recipes.demo``) or script (``*.py``) with the remaining arguments.
After that, ``jax.devices()`` lists every process's devices: build one global ``Mesh`` over
them and pass it as ``Trainer(mesh=...)``; feed each process its own share of every global
batch (the Trainer assembles the global batch with
``jax.make_array_from_process_local_data``); checkpoints are written by all processes
together and restore into any process count.

On a real cluster, start the same child command on every host with ``RGFT_COORDINATOR`` set
to the first host's address, ``RGFT_NUM_PROCESSES`` to the number of hosts and
``RGFT_PROCESS_ID`` to the host's rank (``--child`` is what this launcher runs), or use
``jax.distributed.initialize()``'s own cluster detection (SLURM, Cloud TPU).
On CPU (tests) ``--devices-per-process`` fakes that many devices per process.

A child's failure stops the others; the launcher exits with the first non-zero status.
"""

from __future__ import annotations

import argparse
import os
import runpy
import socket
import subprocess
import sys
import time

from recipes import _cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(target: list[str]) -> None:
    """Runs in each process: joins the group, then runs the target as ``__main__``."""
    import jax

    jax.distributed.initialize(
        os.environ["RGFT_COORDINATOR"], num_processes=int(os.environ["RGFT_NUM_PROCESSES"]),
        process_id=int(os.environ["RGFT_PROCESS_ID"]),
        # A process whose heartbeats stop this long is declared dead (and all stop): raise
        # it on a starved machine (tests on a shared CPU).
        heartbeat_timeout_seconds=int(os.environ.get("RGFT_HEARTBEAT_TIMEOUT_S", "100")))
    sys.argv = list(target)
    if target[0].endswith(".py"):
        runpy.run_path(target[0], run_name="__main__")
    else:
        runpy.run_module(target[0], run_name="__main__", alter_sys=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m recipes.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--devices-per-process", type=int, default=0,
                   help="CPU only: fake this many devices per process (0: the platform's)")
    p.add_argument("--coordinator", default=None,
                   help="host:port of process 0 (default: 127.0.0.1 and a free port)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("target", nargs=argparse.REMAINDER,
                   help="-- then a module (recipes.demo) or a .py script, and its arguments")
    a = p.parse_args(argv)
    a.target = a.target[1:] if a.target[:1] == ["--"] else a.target
    if not a.target:
        p.error("no target: expected `-- MODULE_OR_SCRIPT [ARGS...]`.")
    if a.num_processes < 1:
        p.error(f"--num-processes {a.num_processes}: must be >= 1.")
    if a.devices_per_process < 0:
        p.error(f"--devices-per-process {a.devices_per_process}: must be >= 0.")
    return a


@_cli.command
def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        child(a.target)
        return 0
    coordinator = a.coordinator or f"127.0.0.1:{_free_port()}"
    procs = []
    for i in range(a.num_processes):
        env = dict(os.environ, RGFT_COORDINATOR=coordinator,
                   RGFT_NUM_PROCESSES=str(a.num_processes), RGFT_PROCESS_ID=str(i))
        if a.devices_per_process:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                                f"device_count={a.devices_per_process}").strip()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "recipes.launch", "--child", "--", *a.target], env=env))
    rc = 0
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed:
            rc = failed[0]
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.2)
    for p in procs:
        p.wait()
    return rc or next((p.returncode for p in procs if p.returncode), 0)


if __name__ == "__main__":
    raise SystemExit(_cli.exit_code(main()))
