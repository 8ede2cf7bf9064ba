# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Checkpoints of a run: train state, data position and host accounting, with orbax.

One orbax ``CheckpointManager`` per directory, three items per step: ``state`` (the
:class:`~rgft_jax.training.TrainState`, ``StandardSave``), ``data`` (the data iterator's
position, JSON) and ``host`` (the run's accounting and histories, JSON).

Restoring reads the checkpoint's own tree (its metadata), so checkpoints written by older
versions of the library restore into today's state: every leaf of the abstract target is
looked up by path (:func:`source_paths`), in order

1. at the same path;
2. one level deeper under ``value`` (params kept as nnx ``Variable`` objects);
3. with the components of ``optional`` (default ``('tracker',)``) removed: RGFT's state
   nests its per-component fields in ``tracker``; older checkpoints hold them flat;
4. both 2 and 3.

Damage. orbax writes a step into a temporary folder and renames it when complete, so a
process killed mid-write leaves only a temporary folder (removed by the next manager) and
never a half-written step. After the rename, :meth:`Checkpointer.save` adds a manifest
(``rgft_manifest.json``: size and SHA-256 of every file, itself written to a temporary file
and renamed) so that damage done later (a truncated, emptied or bit-flipped file) is caught
before anything is read. :meth:`Checkpointer.restore_latest` skips a damaged latest step with
a logged warning, moves it aside (``damaged-<step>``) and resumes from the previous good one.
A step without a manifest (written by an older version, or killed between the rename and
the manifest) is complete by orbax's rename; it is read unverified and, if reading fails,
treated as damaged.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

import jax

log = logging.getLogger(__name__)
#: The manifest of a step folder: ``{relative path: [size, sha256]}`` of its files.
MANIFEST = "rgft_manifest.json"


class DamagedCheckpointError(RuntimeError):
    """A checkpoint step whose files are missing, truncated or altered."""


class RunMismatchError(ValueError):
    """A checkpoint of another run: another method, model, partition, ``steps`` or data."""


def _files(folder: str) -> list[str]:
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, n), folder) for n in names if n != MANIFEST]
    return sorted(out)


def _digest(path: str) -> list:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return [os.path.getsize(path), h.hexdigest()]


def write_manifest(folder: str) -> None:
    """Writes ``folder``'s manifest (temporary file, then an atomic rename)."""
    manifest = {rel: _digest(os.path.join(folder, rel)) for rel in _files(folder)}
    tmp = os.path.join(folder, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, MANIFEST))


def verify(folder: str) -> bool:
    """Checks ``folder`` against its manifest; ``False`` when it has none (unverified).

    Raises:
      DamagedCheckpointError: a file is missing or its size or checksum differs.
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        if not os.path.exists(os.path.join(folder, "_CHECKPOINT_METADATA")):
            raise DamagedCheckpointError(f"{folder}: no {MANIFEST} and no _CHECKPOINT_METADATA")
        return False
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DamagedCheckpointError(f"{path}: unreadable manifest ({e})") from None
    for rel, (size, sha) in manifest.items():
        full = os.path.join(folder, rel)
        if not os.path.exists(full):
            raise DamagedCheckpointError(f"{full}: missing")
        got = _digest(full)
        if got[0] != size:
            raise DamagedCheckpointError(f"{full}: {got[0]} bytes, the manifest says {size}")
        if got[1] != sha:
            raise DamagedCheckpointError(f"{full}: checksum differs from the manifest")
    return True


def _is_aborted_read_noise(unraisable: Any) -> bool:
    """Whether an unraisable exception is one an aborted orbax read leaves behind: its
    array reads still pending when its event loop closed ("Event loop is closed" from
    tensorstore's callbacks, and the abandoned read coroutines)."""
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    # type(), not isinstance(): some objects (torch's deprecated aliases) warn on __class__.
    return type(obj) is types.CoroutineType and "orbax" in obj.cr_code.co_filename


@contextlib.contextmanager
def _quiet_aborted_reads():
    """Drops the reports of abandoned reads (other reports pass) and yields a list: when a
    failed read was appended to it, the abandoned reads are collected now, not in whatever
    code runs next.

    When tensorstore fails to read one array of a step without a manifest, orbax's event
    loop closes with the other arrays' reads pending: each then reports an unraisable
    exception, some only when the garbage collector runs. The failure itself is already
    reported as the damaged step's warning.
    """
    aborted: list[int] = []
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_aborted_read_noise(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield aborted
    finally:
        if aborted:
            gc.collect()
        sys.unraisablehook = previous


Path = tuple[str, ...]
#: Path components that older checkpoints may lack (see the module docstring).
OPTIONAL_COMPONENTS = ("tracker",)


def path_names(tree: Any) -> list[Path]:
    """The leaf paths of ``tree`` as tuples of strings (dict keys, indices, field names)."""
    def name(k):
        return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))

    return [tuple(name(k) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def source_paths(
    target: Sequence[Path], disk: Sequence[Path], optional: Sequence[str] = OPTIONAL_COMPONENTS,
    where: str = "the checkpoint",
) -> list[Path]:
    """For every target path, the path on disk that holds it (see the module docstring).

    Raises:
      ValueError: some target paths have no source; the message names a few.
    """
    on_disk = set(disk)
    out, missing = [], []
    for p in target:
        stripped = tuple(c for c in p if c not in optional)
        for cand in (p, p + ("value",), stripped, stripped + ("value",)):
            if cand in on_disk:
                out.append(cand)
                break
        else:
            missing.append(p)
    if missing:
        shown = ", ".join("/".join(p) for p in missing[:3])
        raise RunMismatchError(
            f"restore: {where} does not hold this run's state ({len(missing)} leaves missing, "
            f"e.g. {shown}); was it written by another method, model or partition?")
    return out


class Checkpointer:
    """Saves and restores ``(state, data position, host accounting)`` under ``directory``.

    Args:
      directory: the checkpoints' folder (one subfolder per step).
      keep: how many checkpoints orbax keeps (0: all).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(os.fspath(directory))
        self._mgr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep or None, create=True, cleanup_tmp_directories=True),
            # Known handlers: a fresh manager can read a checkpoint's metadata.
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler(),
                           "host": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def save(self, step: int, state: Any, data: Any, host: dict[str, Any]) -> None:
        """Saves atomically (orbax writes, then renames) and waits until it is written."""
        import orbax.checkpoint as ocp

        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({"data": data}),
            host=ocp.args.JsonSave(host)))
        self._mgr.wait_until_finished()
        if jax.process_index() == 0:
            write_manifest(self.step_dir(step))

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def restore_latest(self, like: Any, check: Any = None,
                       ) -> tuple[int, Any, Any, dict[str, Any]] | None:
        """``(step, state, data, host)`` of the newest undamaged step; ``None`` without one.

        A damaged step (see the module docstring) is logged, moved aside to
        ``damaged-<step>`` and the previous step tried. Other errors (a checkpoint of another
        model or method) are raised.

        Raises:
          DamagedCheckpointError: every step is damaged.
        """
        steps = self.all_steps()
        with _quiet_aborted_reads() as aborted:
            for i, step in enumerate(reversed(steps)):
                try:
                    verified = verify(self.step_dir(step))
                    try:
                        state, data, host = self.restore(step, like, check)
                    except RunMismatchError:
                        raise  # another run's checkpoint: not damage
                    except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many kinds)
                        if verified:
                            raise
                        aborted.append(step)
                        raise DamagedCheckpointError(f"{self.step_dir(step)}: unreadable "
                                                     f"({type(e).__name__}: {e})") from None
                except DamagedCheckpointError as e:
                    # The text only: a log record holding the error would keep the failed
                    # read's frames (and its abandoned coroutines) alive as long as the record.
                    reason = str(e)
                    earlier = steps[len(steps) - 2 - i] if i + 1 < len(steps) else None
                    log.warning("checkpoint step %d is damaged (%s); falling back to %s", step,
                                reason, "none: starting afresh" if earlier is None
                                else f"step {earlier}")
                    print(f"warning: checkpoint step {step} is damaged ({reason}); falling back to "
                          f"{'none' if earlier is None else f'step {earlier}'}", flush=True)
                    self._set_aside(step)
                    continue
                if not verified:
                    log.info("checkpoint step %d has no manifest (older version): read "
                             "unverified", step)
                return step, state, data, host
        if steps:
            raise DamagedCheckpointError(
                f"every checkpoint under {self.directory} is damaged (moved aside to "
                "damaged-<step>); delete them to start afresh.")
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() != 0:
            return
        dest = os.path.join(self.directory, f"damaged-{step}")
        n = 0
        while os.path.exists(dest):
            n += 1
            dest = os.path.join(self.directory, f"damaged-{step}.{n}")
        os.replace(self.step_dir(step), dest)
        self._mgr.reload()

    def restore(self, step: int, like: Any, check: Any = None) -> tuple[Any, Any, dict[str, Any]]:
        """``(state, data, host)`` of ``step``; ``state`` has the structure, dtypes and
        shardings of ``like`` (arrays or ``ShapeDtypeStruct``). ``check(host)`` runs on the
        host item before the state is read (it raises ``ValueError`` for another run)."""
        import orbax.checkpoint as ocp

        if check is not None:
            check(self._mgr.restore(step, args=ocp.args.Composite(
                host=ocp.args.JsonRestore()))["host"], self.step_dir(step))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        meta = self._mgr.item_metadata(step)["state"]
        meta = getattr(meta, "tree", meta)
        sources = source_paths(path_names(abstract), path_names(meta),
                               where=f"the checkpoint at {os.path.join(self.directory, str(step))}")
        by_source = dict(zip(sources, jax.tree.leaves(abstract)))
        default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        disk_paths = path_names(meta)
        disk_flat, disk_def = jax.tree_util.tree_flatten(meta)
        target = jax.tree_util.tree_unflatten(disk_def, [
            by_source[p] if p in by_source
            else jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=default)
            for p, m in zip(disk_paths, disk_flat)])
        out = self._mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
            host=ocp.args.JsonRestore()))
        restored = dict(zip(path_names(out["state"]), jax.tree.leaves(out["state"])))
        state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract),
                                             [restored[p] for p in sources])
        return state, out["data"]["data"], out["host"]

    def close(self) -> None:
        self._mgr.close()
