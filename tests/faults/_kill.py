"""The kill -9 harness: runs a command, SIGKILLs it at chosen moments, reruns it until done.

Kill moments are picked from what the run writes, polled every few milliseconds: *during a
checkpoint write* (an orbax temporary folder ``<step>.orbax-checkpoint-tmp-*`` has just
appeared) or *between checkpoints* (a random delay after a step folder appeared). Each kill
waits for a checkpoint event not seen before, so every rerun makes progress.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

TMP = ".orbax-checkpoint-tmp"


@dataclasses.dataclass
class Kill:
    moment: str  # "during_write" or "between"
    seconds: float  # after the process started
    tmp_left: list[str]  # temporary folders present right after the kill (a write cut short)


def _events(root: str) -> set[str]:
    out = set()
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.basename(os.path.dirname(dirpath)) == "checkpoints" or dirpath.endswith(
                os.sep + "checkpoints"):
            for d in dirnames:
                if d.isdigit() or TMP in d:
                    out.add(os.path.join(dirpath, d.split(TMP)[0] + (" tmp" if TMP in d else "")))
    return out


def _tmp_dirs(root: str) -> list[str]:
    return sorted(os.path.join(p, d) for p, ds, _ in os.walk(root) for d in ds if TMP in d)


def run_with_kills(cmd: list[str], env: dict[str, str], watch: str, kills: int, seed: int,
                   log_path: str, timeout: float = 2400) -> list[Kill]:
    """Runs ``cmd`` (SIGKILLed ``kills`` times, rerun after each) until it exits 0.

    Args:
      watch: the folder whose ``checkpoints`` subfolders are polled.
      log_path: stdout and stderr of every run are appended here.

    Returns:
      The kills, in order.
    """
    rng = random.Random(seed)
    done: list[Kill] = []
    seen: set[str] = set()
    t_end = time.time() + timeout
    with open(log_path, "a") as log:
        while True:
            log.write(f"\n=== run {len(done) + 1}: {' '.join(cmd)}\n")
            log.flush()
            t0 = time.time()
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            if len(done) >= kills:
                rc = proc.wait(timeout=max(1.0, t_end - time.time()))
                if rc != 0:
                    raise RuntimeError(f"the final run exited {rc}; see {log_path}")
                return done
            moment = "during_write" if len(done) % 2 == 0 else "between"
            delay = rng.uniform(0.0, 1.5)
            killed = False
            while proc.poll() is None:
                if time.time() > t_end:
                    proc.kill()
                    raise TimeoutError(f"kill harness: over {timeout}s; see {log_path}")
                new = _events(watch) - seen
                fresh_tmp = [e for e in new if e.endswith(" tmp")]
                fresh_step = [e for e in new if not e.endswith(" tmp")]
                if (moment == "during_write" and fresh_tmp) or (
                        moment == "between" and fresh_step):
                    if moment == "between":
                        time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    seen |= _events(watch)
                    done.append(Kill(moment, time.time() - t0, _tmp_dirs(watch)))
                    log.write(f"=== SIGKILL ({moment}) after {time.time() - t0:.2f}s; "
                              f"temporary folders left: {done[-1].tmp_left}\n")
                    killed = True
                    break
                time.sleep(0.003)
            if not killed:
                # It finished before a new event came: no kill left to place in this run.
                rc = proc.returncode
                raise RuntimeError(f"run ended (rc {rc}) before kill {len(done) + 1} of {kills}; "
                                   f"use more steps; see {log_path}")


def subprocess_env(repo: str, cache_dir: str) -> dict[str, str]:
    """The env of a child run: this checkout's packages, CPU, a shared compilation cache
    (reruns skip compiling; a cached executable is the same program, bit for bit)."""
    path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=cache_dir,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                PYTHONUNBUFFERED="1", PYTHON=sys.executable)
