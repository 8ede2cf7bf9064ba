"""Multi-device checks, each in a subprocess with 8 fake CPU devices."""

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


def run_script(name: str, *args: str, timeout: int = 600) -> str:
    # The subprocess imports this checkout's rgft_jax, not an installed one.
    path = os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(HERE / name), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.mark.multidevice
def test_transforms_sharded_equal_single_device():
    assert "SHARDED_OK" in run_script("_transforms_sharded.py")


@pytest.mark.multidevice
def test_axis_name_makes_replicas_agree_on_the_mask():
    out = run_script("_transforms_sharded.py", "axis_name")
    assert "AXIS_NAME_OK" in out, out
    assert "mask axis_name=None: replicas agree on residuals False" in out  # it can fail


@pytest.mark.multidevice
def test_trainer_on_mesh_equals_single_device():
    assert "TRAINING_SHARDED_OK" in run_script("_training_sharded.py")
