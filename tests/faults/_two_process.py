"""Two-process training on CPU (run by two_process_test.py; not a test module itself).

    python -m recipes.launch --num-processes 2 --devices-per-process 2 -- \
        tests/faults/_two_process.py OUT [RESTORE_FROM]            # two processes
    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python tests/faults/_two_process.py OUT [RESTORE_FROM]      # the one-process twin

Both see 4 devices in all (2 per process, or 4 in one) in one ``('data', 'fsdp')`` mesh; each
process feeds its half of every global batch. After STEPS steps process 0 writes params,
error map and metrics to ``OUT/result.npz``; the run checkpoints its last step under ``OUT``.
With RESTORE_FROM, it restores that run's checkpoint instead (written with the other process
count) and writes the restored state to ``OUT/restored.npz``.
"""

import os
import sys

import numpy as np

STEPS, BATCH = 4, 8


def main(argv):
    out = argv[0]
    restore_from = argv[1] if len(argv) > 1 else None
    import jax
    from jax.sharding import Mesh

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from training.conftest import NUM_CLASSES, NUM_HEADS, batches, bert

    import rgft_jax as rgft
    from rgft_jax.training import TrainConfig, Trainer, methods
    from rgft_jax.training._checkpoint import path_names

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 1), ("data", "fsdp"))
    method = methods.rgft(learning_rate=1e-2, update_every=2, threshold=("percentile", 25))
    config = TrainConfig(steps=STEPS, progress=False, log_every=1, checkpoint_every=STEPS)
    tr = Trainer(bert(1), method, config, num_heads=NUM_HEADS, num_layers=1,
                 num_classes=NUM_CLASSES, mesh=mesh, workdir=restore_from or out)
    n, share = jax.process_count(), BATCH // jax.process_count()
    local = [{k: v[jax.process_index() * share:(jax.process_index() + 1) * share]
              for k, v in b.items()} for b in batches(STEPS, seed=4)]
    if restore_from:
        assert tr.restore() == {"epoch": 0, "step": STEPS}
        name = "restored.npz"
    else:
        tr.fit(iter(local), checkpoint_data_state=lambda: {"epoch": 0, "step": STEPS})
        name = "result.npz"
    state = tr.state
    em = rgft.error_map(state.opt_state)
    flat = {"params/" + "/".join(p): np.asarray(x) for p, x in
            zip(path_names(state.params), jax.tree.leaves(state.params))}
    flat.update({"residuals": np.asarray(em.residuals), "mask": np.asarray(em.mask),
                 "step": np.asarray(state.step)})
    if not restore_from:
        flat.update({f"metric/{k}": np.asarray([r[k] for r in tr.history])
                     for k in ("loss", "grad_norm", "accuracy", "update_ratio")})
    tr.close()
    if jax.process_index() == 0:
        os.makedirs(out, exist_ok=True)
        np.savez(os.path.join(out, name), **flat)
    print(f"TWO_PROCESS_OK process {jax.process_index()} of {n}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
