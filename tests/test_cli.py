"""The `interp` command: help with examples, data on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from interpcli import CHECKPOINT_FORMAT_VERSION, read_metadata
from interpcli.artifacts import load_tensors, save_tensors
from interpcli.cli import app
from interpcli.data import list_datasets
from interpcli.methods import list_methods
from interpcli.models import list_models

from .conftest import ROOT

COMMANDS = [c.name for c in app.registered_commands]  # every command, as registered: nothing left out


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def test_every_command_is_registered():
    assert {"train", "eval", "info", "models", "datasets", "methods", "explain", "occlude"} <= set(COMMANDS)


def test_root_help_lists_commands(runner):
    r = invoke(runner, "--help")
    assert r.exit_code == 0
    for c in COMMANDS:
        assert c in r.output
    assert "Example" in r.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_an_example(runner, cmd):
    r = invoke(runner, cmd, "--help")
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and "interp " + cmd in r.output


def test_version(runner):
    from interpcli import __version__

    r = invoke(runner, "--version")
    assert r.exit_code == 0 and r.output.strip() == __version__


def test_train_prints_written_paths_only(runner, tmp_path):
    out = tmp_path / "m.safetensors"
    r = invoke(runner, "train", "-a", "lenet", "-d", "digits", "-e", "1", "-q", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(out), str(tmp_path / "m.log.jsonl")]
    assert read_metadata(out)["arch"] == "lenet"


def test_train_json_and_arch_args(runner, tmp_path):
    out = tmp_path / "w.safetensors"
    r = invoke(runner, "train", "-a", "lenet", "-d", "digits", "-e", "1", "-q", "--json", "--arch-arg", "width=4",
               "--arch-arg", "hidden=32", "-o", out)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["checkpoint"] == str(out) and 0 <= res["metrics"]["test_acc"] <= 1
    meta = read_metadata(out)
    assert meta["arch_kwargs"] == {"width": 4, "hidden": 32}
    tensors, _ = load_tensors(out)
    assert tensors["conv1.weight"].shape == (4, 1, 5, 5)


def test_info_json_and_table(runner, digits_ckpt):
    r = invoke(runner, "info", digits_ckpt, "--json")
    assert r.exit_code == 0
    meta = json.loads(r.stdout)
    assert meta == read_metadata(digits_ckpt)
    r = invoke(runner, "info", digits_ckpt)
    assert r.exit_code == 0 and "lenet" in r.stdout and "metrics.test_acc" in r.stdout


def test_eval_matches_training_metrics(runner, digits_ckpt):
    r = invoke(runner, "eval", digits_ckpt, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["accuracy"] == pytest.approx(read_metadata(digits_ckpt)["metrics"]["test_acc"])
    assert res["n"] == 360 and sum(map(sum, res["confusion"])) == 360
    assert len(res["per_class_accuracy"]) == 10
    r = invoke(runner, "eval", digits_ckpt, "--split", "train")
    assert r.exit_code == 0 and "confusion" in r.stdout


def test_models_and_datasets_listings(runner):
    r = invoke(runner, "models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"resnet20", "resnet56", "lenet", "pulse-cnn", "airbench94"} <= set(rows)
    assert 0.26e6 < rows["resnet20"]["params"] < 0.28e6 and rows["resnet20"]["input"] == [3, 32, 32]
    r = invoke(runner, "datasets", "--json")
    names = {d["name"] for d in json.loads(r.stdout)}
    assert {"cifar10", "mnist", "fashion-mnist", "pulses", "digits", "folder", "npz"} <= names
    assert invoke(runner, "models").exit_code == 0 and invoke(runner, "datasets").exit_code == 0


@pytest.mark.parametrize("cmd,names", [("models", list_models), ("datasets", list_datasets),
                                       ("methods", list_methods)])
def test_listings_print_one_whole_name_per_line_into_a_pipe(runner, cmd, names):
    r = invoke(runner, cmd)  # CliRunner's stdout is not a terminal
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == names()  # `interp models | grep bcos` sees whole names
    rows = json.loads(invoke(runner, cmd, "--json").stdout)
    assert [row["name"] for row in rows] == names()


def test_models_json_declares_feature_and_classifier_layers(runner):
    rows = {m["name"]: m for m in json.loads(invoke(runner, "models", "--json").stdout)}
    assert rows["resnet20"]["classifier_layer"] == "fc" and rows["resnet20"]["feature_layer"] == "layer3"
    assert rows["smp-directional"]["classifier_layer"] == "head"
    assert all(r["classifier_layer"] for r in rows.values())


def test_closed_sets_are_choices_with_completion(runner):
    r = invoke(runner, "occlude", "x.safetensors", "--score", "nope")
    _one_line_error(r, "'nope' is not one of", "gds")
    r = invoke(runner, "explain", "x.safetensors", "-m", "gradcamm")
    _one_line_error(r, "'gradcamm' is not one of", "gradcam")
    env = {"_INTERP_COMPLETE": "complete_bash", "COMP_WORDS": "interp train --arch bcos", "COMP_CWORD": "3"}
    r = runner.invoke(app, [], prog_name="interp", env=env)
    assert {"bcos-resnet20", "bcos-vgg9"} <= set(r.stdout.split()), r.output


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args,needles", [
    (["-a", "resnet21", "-d", "digits"], ["'resnet21' is not one of", "resnet20", "lenet"]),
    (["-a", "lenet", "-d", "imagenet"], ["unknown dataset 'imagenet'", "cifar10", "pulses"]),
    (["-a", "lenet", "-d", "digits", "-e", "0"], ["epochs"]),
    (["-a", "lenet", "-d", "digits", "-b", "-4"], ["batch-size"]),
    (["-a", "lenet", "-d", "digits", "--optimizer", "rmsprop"], ["'sgd', 'adam', 'adamw'"]),
    (["-a", "lenet", "-d", "digits", "--arch-arg", "depth"], ["KEY=VALUE"]),
    (["-a", "lenet", "-d", "digits", "--arch-arg", "depth=3"], ["no option depth"]),
    (["-a", "lenet", "-d", "digits", "--classes", "3,x"], ["class 'x'"]),
    (["-a", "lenet", "-d", "digits", "--epochs", "many"], ["epochs"]),
    (["-a", "lenet", "-d", "digits", "--no-such-option"], ["no-such-option"]),
])
def test_train_bad_input(runner, tmp_path, args, needles):
    out = tmp_path / "x.safetensors"
    _one_line_error(invoke(runner, "train", *args, "-o", out), *needles)
    assert list(tmp_path.iterdir()) == []


def test_train_missing_output_folder(runner, tmp_path):
    _one_line_error(invoke(runner, "train", "-a", "lenet", "-d", "digits", "-o", tmp_path / "no" / "x.safetensors"),
                    "does not exist")


def test_train_missing_dataset_files(runner, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke(runner, "train", "-a", "resnet20", "-d", "cifar10", "--data-dir", empty,
               "-o", tmp_path / "x.safetensors")
    _one_line_error(r, "cifar10.npz", "Downloads are disabled")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_corrupt_truncated_and_future_checkpoints(runner, digits_ckpt, tmp_path):
    data = digits_ckpt.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(1000))
    tensors, meta = load_tensors(digits_ckpt)
    future = tmp_path / "future.safetensors"
    save_tensors(future, tensors, dict(meta, format_version=CHECKPOINT_FORMAT_VERSION + 1))
    for cmd in ("info", "eval"):
        _one_line_error(invoke(runner, cmd, trunc), "truncated")
        _one_line_error(invoke(runner, cmd, garbage), "not a valid safetensors file")
        _one_line_error(invoke(runner, cmd, future), "newer than this interp supports")
        _one_line_error(invoke(runner, cmd, tmp_path / "missing.safetensors"), "not found")


def test_eval_wrong_dataset_shape(runner, digits_ckpt):
    r = invoke(runner, "eval", digits_ckpt, "--dataset", "pulses")
    _one_line_error(r, "expects")


def test_real_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    exe = [sys.executable, "-m", "interpcli"]
    out = tmp_path / "p.safetensors"
    r = subprocess.run([*exe, "train", "-a", "lenet", "-d", "digits", "-e", "1", "-o", str(out)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(out)
    assert "epoch 1/1" in r.stderr  # people's messages go to stderr
    r = subprocess.run([*exe, "info", str(out), "--json"], env=env, capture_output=True, text=True)
    assert json.loads(r.stdout)["arch"] == "lenet"
    r = subprocess.run([*exe, "train", "-a", "nope", "-d", "digits"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("Error: Invalid value for '--arch'") and "'nope' is not one of" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_eval_of_a_checkpoint_trained_on_an_npz_file(runner, tmp_path):
    import numpy as np

    from interpcli.data import load_dataset

    d = load_dataset("digits")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=d.x_train.numpy(), y_train=d.y_train.numpy(), x_test=d.x_test.numpy(),
             y_test=d.y_test.numpy())
    out = tmp_path / "m.safetensors"
    assert invoke(runner, "train", "-a", "lenet", "-d", npz, "-e", "1", "-q", "-o", out).exit_code == 0
    r = invoke(runner, "eval", out, "--json")  # the recorded path is a hint, never opened
    assert r.exit_code == 2 and f"pass --dataset {npz}" in r.output and "never opened" in r.output
    r = invoke(runner, "eval", out, "--dataset", npz, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 360
