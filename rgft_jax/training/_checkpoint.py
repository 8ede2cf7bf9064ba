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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax

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
        raise ValueError(
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
                max_to_keep=keep or None, create=True),
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

    def restore(self, step: int, like: Any) -> tuple[Any, Any, dict[str, Any]]:
        """``(state, data, host)`` of ``step``; ``state`` has the structure, dtypes and
        shardings of ``like`` (arrays or ``ShapeDtypeStruct``)."""
        import orbax.checkpoint as ocp

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
