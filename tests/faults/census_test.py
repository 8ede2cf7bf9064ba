"""The bad-input census: every case names the argument or file, the value and what is allowed.

One parametrised test, ``case -> expected message``. Cases marked ``cli`` run a recipe's
``main()`` and must print exactly one ``error: …`` line on stderr (no traceback) and exit
non-zero; the others call the library and must raise with the message. docs/results.md lists
the table.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import rgft_jax as rgft
from recipes import demo
from rgft_jax import data
from rgft_jax.data._files import read_records
from rgft_jax.models import bert as bert_lib
from rgft_jax.training import TrainConfig, Trainer, methods

REPO = pathlib.Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("_demo_fixtures",
                                               REPO / "tests" / "recipes" / "demo_test.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("census")
    model = fixtures.tiny_checkpoint(root / "model", layers=1)
    csv = fixtures.tiny_csv(root / "train.csv", n=40)
    return root, model, csv


def _write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def _bert(layers=1):
    from training.conftest import bert

    return bert(layers)


def _tiny_demo_args(model, train, out, *extra):
    return ["--model", str(model), "--train", str(train), "--methods", "full", "--steps", "2",
            "--batch-size", "4", "--max-length", "8", "--eval-examples", "4", "--no-progress",
            "--out", str(out), *extra]


# ------------------------------------------------------------------ library cases
def api_cases():
    return {
        "TrainConfig steps=0": (lambda a: TrainConfig(steps=0), r"steps=0 must be an int >= 1"),
        "TrainConfig steps=2.5": (lambda a: TrainConfig(steps=2.5),
                                  r"steps=2.5 must be an int >= 1"),
        "TrainConfig task": (lambda a: TrainConfig(task="regression"),
                             r"task='regression'; allowed: \('classification'"),
        "TrainConfig log_every=-1": (lambda a: TrainConfig(log_every=-1),
                                     r"log_every=-1 must be an int >= 0"),
        "TrainConfig max_compiled=0": (lambda a: TrainConfig(max_compiled=0),
                                       r"max_compiled=0 must be >= 1"),
        "TrainConfig donate='yes'": (lambda a: TrainConfig(donate_optimizer_state="yes"),
                                     r"donate_optimizer_state='yes'; allowed: None, True, False"),
        "rgft update_every=0": (lambda a: methods.rgft(update_every=0), r"update_every=0"),
        "rgft threshold budget 1.5": (lambda a: methods.rgft(threshold=("budget", 1.5)),
                                      r"budget.*1\.5"),
        "rgft components": (lambda a: methods.rgft(components="rows"), r"components='rows'"),
        "rgft learning_rate<0": (lambda a: methods.rgft(learning_rate=-1e-3),
                                 r"learning_rate=-0\.001"),
        "lora rank=0": (lambda a: methods.lora(rank=0), r"rank=0"),
        "top_layers k='2'": (lambda a: methods.top_layers(k="2"), r"k='2'"),
        "unknown method": (lambda a: methods.get("nope"), r"'nope'.*full"),
        "residual_guided beta<0": (lambda a: rgft.residual_guided(
            rgft.optax_adamw(1e-3) if hasattr(rgft, "optax_adamw") else __import__(
                "optax").adamw(1e-3), partition="leaves", beta=-1.0),
            r"beta=-1\.0"),
        "Trainer method str": (lambda a: Trainer(_bert(), "full", TrainConfig(), num_heads=4,
                                                 num_layers=1, num_classes=3),
                               r"method='full'; allowed: a Method"),
        "Trainer num_classes=1": (lambda a: Trainer(_bert(), methods.full(), TrainConfig(),
                                                    num_heads=4, num_layers=1, num_classes=1),
                                  r"num_classes=1 must be >= 2"),
        # pytrees
        "pytree without components": (lambda a: rgft.residual_guided(
            __import__("optax").sgd(0.1)).init({}), r"the rules leave no component"),
        "heads do not divide": (lambda a: Trainer(_bert(), methods.rgft(), TrainConfig(),
                                                  num_heads=5, num_layers=1, num_classes=3),
                                r"5"),
        "non-float leaf": (lambda a: Trainer(_int_bert(), methods.full(), TrainConfig(),
                                             num_heads=4, num_layers=1, num_classes=3),
                           r"classifier/bias \(int32\)'\] are not floating point; allowed"),
        # data
        "data: missing file": (lambda a: data.load_text_classification(
            a[0] / "nope.csv", data_dir=str(a[0] / "tfds")), r"nope\.csv"),
        "data: missing column": (lambda a: read_records(
            _write(a[0] / "nocol.csv", "body,label\nhi,pos\n"), text_column="text",
            label_column="label"), r"text_column='text' not found in .*available columns"),
        "data: empty file": (lambda a: data.load_text_classification(
            _write(a[0] / "empty.csv", ""), data_dir=str(a[0] / "tfds")), r"empty\.csv"),
        "data: one class only": (lambda a: data.load_text_classification(
            _write(a[0] / "one.csv", "text,label\n" + "".join(f"t {i},pos\n" for i in range(20))),
            data_dir=str(a[0] / "tfds")),
            r"one\.csv: label_column='label' has 1 class \(\['pos'\]\); a classifier needs >= 2"),
        "data: label not in the label set": (lambda a: data.load_text_classification(
            _write(a[0] / "lab.csv", "text,label\n" + "".join(
                f"t {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)) + "x,maybe\n"),
            label_names=("neg", "pos"), data_dir=str(a[0] / "tfds")), r"maybe"),
        "data: undecodable bytes": (lambda a: read_records(
            _write(a[0] / "bytes.csv", b"text,label\n\xff\xfe\xfa bad,pos\n", "wb"),
            text_column="text", label_column="label", encoding="utf-8"),
            r"bytes\.csv.*utf-8"),
        "data: row longer than the limit": (lambda a: read_records(
            _write(a[0] / "long.csv", "text,label\n" + "x" * 200_000 + ",pos\n"),
            text_column="text", label_column="label"),
            r"long\.csv: data row 1: field larger than field limit .*allowed: at most"),
        # models
        "model: directory without config": (lambda a: bert_lib.BertConfig.from_hf(a[0]),
                                            r"config\.json"),
        "model: mismatched safetensors": (lambda a: _mismatched_model(a), r"shape"),
        "model: unsupported GGUF": (lambda a: _gguf(a), r"general\.architecture='gpt2'.*llama"),
    }


def _int_bert():
    from flax import nnx

    model = _bert()
    model.classifier.bias = nnx.Param(jnp.zeros(3, jnp.int32))
    return model


def _mismatched_model(a):
    from rgft_jax.models import bert

    d = a[0] / "mismatch"
    if not d.exists():
        shutil.copytree(a[1], d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    return bert.from_pretrained(str(d), num_labels=2)


def _gguf(a):
    gguf = pytest.importorskip("gguf")
    from rgft_jax.models import llama

    path = str(a[0] / "gpt2.gguf")
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return llama.from_pretrained(path)


# ------------------------------------------------------------------ command-line cases
def _one_class_csv(a):
    return _write(a[0] / "one_cli.csv", "text,label\n" + "".join(f"t {i},pos\n"
                                                                 for i in range(20)))


def _nocol_csv(a):
    return _write(a[0] / "nocol_cli.csv", "body,label\n" + "".join(
        f"t {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)))


def _unwritable(a):
    d = a[0] / "ro"
    d.mkdir(exist_ok=True)
    _write(d / "file", "x")
    return d / "file" / "out"  # a path below a file: not creatable, even as root


def cli_cases():
    return {
        "cli: --methods unknown": (lambda a: ["--methods", "full,nope"], r"unknown \['nope'\]"),
        "cli: --steps 0": (lambda a: ["--steps", "0"], r"--steps 0: must be >= 1"),
        "cli: --threshold budget:x": (lambda a: ["--threshold", "budget:x"],
                                      r"--threshold 'budget:x': 'x' is not a number"),
        "cli: --model missing": (lambda a: _tiny_demo_args(a[0] / "nomodel", a[2], a[0] / "o1"),
                                 r"nomodel"),
        "cli: CSV without the text column": (
            lambda a: _tiny_demo_args(a[1], _nocol_csv(a), a[0] / "o2"),
            r"text_column='text' not found in .*nocol_cli\.csv"),
        "cli: one class only": (lambda a: _tiny_demo_args(a[1], _one_class_csv(a), a[0] / "o3"),
                                r"one_cli\.csv: label_column='label' has 1 class"),
        "cli: --out not writable": (lambda a: _tiny_demo_args(a[1], a[2], _unwritable(a)),
                                    r"--out '.*ro/file/out': cannot create it \(Not a directory\)"
                                    r"; allowed: a writable folder"),
        "cli: checkpoint of another --steps": (lambda a: _other_steps(a), r"steps: checkpoint 2, "
                                               r"this run 3"),
        "cli: disk full while checkpointing": (lambda a: _disk_full(a),
                                               r"No space left on device"),
    }


def _other_steps(a):
    out = a[0] / "o4"
    args = _tiny_demo_args(a[1], a[2], out, "--checkpoint-every", "1", "--keep-checkpoints")
    assert demo.main(args) == 0
    return [x if x != "2" or args[i - 1] != "--steps" else "3" for i, x in enumerate(args)]


def _disk_full(a):
    return _tiny_demo_args(a[1], a[2], a[0] / "o5", "--checkpoint-every", "1")


CASES = {**api_cases(), **cli_cases()}
#: Cases that train a few demo steps first (compiles: tens of seconds on a loaded CPU).
TRAINING = {"cli: checkpoint of another --steps", "cli: disk full while checkpointing"}


def _record(case, message):
    """Appends ``case -> message`` to $RGFT_CENSUS_OUT (docs/results.md's table), if set."""
    path = os.environ.get("RGFT_CENSUS_OUT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, "message": message}) + "\n")


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.slow) if c in TRAINING else c for c in sorted(CASES)])
def test_bad_input(case, assets, capsys, monkeypatch):
    make, match = CASES[case]
    if not case.startswith("cli:"):
        with pytest.raises((ValueError, TypeError, OSError)) as info:
            make(assets)
        assert info.match(match), str(info.value)
        _record(case, f"{type(info.value).__name__}: {info.value}")
        return
    if case == "cli: disk full while checkpointing":
        from rgft_jax.training import _checkpoint

        def full(folder):  # the disk fills up while this step is written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)

        monkeypatch.setattr(_checkpoint, "write_manifest", full)
    argv = make(assets)
    capsys.readouterr()
    try:
        rc = demo.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc not in (0, None), err
    assert "Traceback" not in "\n".join(err)
    errors = [line for line in err if line.startswith("python -m recipes.demo: error: ")
              or line.startswith("error: ")]
    assert len(errors) == 1, err
    assert re.search(match, errors[0]), errors[0]
    _record(case, errors[0])


def test_the_command_line_prints_no_traceback(assets):
    """The census's CLI cases in-process; one of them for real, as a process."""
    root, model, _ = assets
    csv = _nocol_csv(assets)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "recipes.demo",
                           *_tiny_demo_args(model, csv, root / "o6")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: text_column='text' not found"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
