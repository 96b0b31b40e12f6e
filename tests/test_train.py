"""Training really learns, is reproducible, resumes exactly, and writes what it promises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from interpcli import TrainConfig, load_model, read_metadata, train
from interpcli.artifacts import load_npz, load_tensors
from interpcli.errors import ConfigError
from interpcli.training import lr_factor, sidecar

from .conftest import ROOT


def _weights(path):
    tensors, _ = load_tensors(path)
    return tensors


def test_lenet_learns_digits(tmp_path):
    out = tmp_path / "lenet.safetensors"
    res = train(TrainConfig(arch="lenet", dataset="digits", epochs=20, seed=0), out=out, device="cpu")
    assert res.metrics["test_acc"] >= 0.95
    model = load_model(out)
    from interpcli.data import load_dataset
    from interpcli.evaluate import evaluate

    ds = load_dataset("digits")
    ev = evaluate(model, ds.x_test, ds.y_test)
    assert ev["accuracy"] == pytest.approx(res.metrics["test_acc"])  # the saved model is the evaluated one
    conf = np.array(ev["confusion"])
    assert conf.sum() == 360 and np.trace(conf) == round(ev["accuracy"] * 360)


def test_pulse_cnn_learns_pulses(tmp_path):
    out = tmp_path / "pulse.safetensors"
    cfg = TrainConfig(arch="pulse-cnn", dataset="pulses", dataset_options={"n_train": 600, "n_test": 300},
                      epochs=3, seed=0)
    res = train(cfg, out=out, device="cpu")
    assert res.metrics["test_acc"] >= 0.95
    meta = read_metadata(out)
    assert meta["classes"] == ["square", "gaussian", "sine"]
    assert meta["input_shape"] == [1, 100, 100]
    assert meta["dataset"]["n_train"] == 600


def test_same_seed_is_bitwise_identical_and_other_seed_differs(tmp_path):
    cfg = dict(arch="lenet", dataset="digits", epochs=2, translate=1, flip=True)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(TrainConfig(seed=seed, **cfg), out=tmp_path / f"{name}.safetensors", device="cpu")
    a, b, c = (_weights(tmp_path / f"{n}.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class _StopAt:
    """A reporter that interrupts training at the first step of ``epoch`` (0-based), like Ctrl-C."""

    def __init__(self, epoch):
        self.at = epoch

    def start(self, *a): ...
    def epoch(self, *a): ...
    def finish(self): ...

    def step(self, epoch, *a):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=4, seed=3, translate=1, snapshot_every=7,
                      optimizer="sgd", lr=0.05)
    full = tmp_path / "full.safetensors"
    train(cfg, out=full, device="cpu")
    part = tmp_path / "part.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=part, device="cpu", reporter=_StopAt(2))
    assert not part.exists() and sidecar(part, ".state.safetensors").exists()
    assert len(sidecar(part, ".log.jsonl").read_text().splitlines()) == 2
    train(cfg, out=part, device="cpu", resume=True)
    a, b = _weights(full), _weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not sidecar(part, ".state.safetensors").exists()
    la = [json.loads(l) for l in sidecar(full, ".log.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in sidecar(part, ".log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    ka, _ = load_npz(sidecar(full, ".kernels.npz"))
    kb, _ = load_npz(sidecar(part, ".kernels.npz"))
    assert np.array_equal(ka["steps"], kb["steps"]) and np.array_equal(ka["kernels"], kb["kernels"])


def test_resume_refuses_changed_options_and_missing_state(tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=2), out=out, resume=True, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=3), out=out, device="cpu", reporter=_StopAt(1))
    with pytest.raises(ConfigError, match="lr"):  # --epochs may change (tests/test_new_user.py), the rest not
        train(TrainConfig(arch="lenet", dataset="digits", epochs=3, lr=0.2), out=out, resume=True, device="cpu")


def test_sigkill_loses_at_most_the_current_epoch(tmp_path):
    """A real `interp train` process killed with SIGKILL resumes to the same weights."""
    args = ["-m", "interpcli", "train", "-a", "pulse-cnn", "-d", "pulses", "--dataset-arg", "n_train=256",
            "--dataset-arg", "n_test=64", "-e", "3", "-b", "64", "-q", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="1")
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    subprocess.run([sys.executable, *args, "-o", str(full)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([sys.executable, *args, "-o", str(part)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = sidecar(part, ".state.safetensors")
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if part.exists():
        pytest.skip("the run finished before it could be killed")
    _, meta = load_tensors(state)  # the state on disk is complete and readable
    assert 1 <= meta["epoch"] < 3
    subprocess.run([sys.executable, *args, "-o", str(part), "--resume"], check=True, env=env, capture_output=True)
    a, b = _weights(full), _weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sidecar_files_and_metadata(digits_ckpt):
    meta = read_metadata(digits_ckpt)
    assert meta["arch"] == "lenet" and meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    assert meta["encoding"]["kind"] == "normalize" and len(meta["encoding"]["mean"]) == 1
    assert meta["train_config"]["epochs"] == 3 and meta["train_config"]["lr"] == 0.01  # lenet recipe
    assert meta["dataset"]["n_val"] == 144 and meta["dataset"]["n_train_used"] == 1437 - 144
    assert set(meta["metrics"]) >= {"loss", "train_acc", "val_acc", "test_acc", "epochs", "steps"}
    log = [json.loads(l) for l in sidecar(digits_ckpt, ".log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert set(log[0]) >= {"loss", "train_acc", "val_acc", "test_acc", "lr", "seconds", "images_per_s"}
    k, kmeta = load_npz(sidecar(digits_ckpt, ".kernels.npz"))
    steps_per_epoch = -(-(1437 - 144) // 128)
    assert k["steps"].tolist() == list(range(0, 3 * steps_per_epoch + 1, 5))
    assert k["kernels"].shape == (len(k["steps"]), 6, 1, 5, 5)
    final = load_model(digits_ckpt).net.conv1.weight.detach().numpy()
    if k["steps"][-1] == 3 * steps_per_epoch:
        assert np.array_equal(k["kernels"][-1], final)
    assert not np.array_equal(k["kernels"][0], k["kernels"][-1])
    assert kmeta["layer"] == "conv1"


def test_validation_split_and_folds_are_recorded(tmp_path):
    out = tmp_path / "f.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=1, folds=5, fold=2), out=out, device="cpu")
    d = read_metadata(out)["dataset"]
    assert d["folds"] == 5 and d["fold"] == 2 and d["n_val"] + d["n_train_used"] == 1437
    assert abs(d["n_val"] - 1437 / 5) <= 5


def test_class_subset(tmp_path):
    out = tmp_path / "s.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=2, classes=["3", "8"]), out=out, device="cpu")
    meta = read_metadata(out)
    assert meta["classes"] == ["3", "8"] and meta["num_classes"] == 2
    assert meta["dataset"]["class_subset"] == ["3", "8"]


@pytest.mark.parametrize("kw,msg", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch-size"), (dict(lr=-1.0), "lr"),
    (dict(optimizer="rmsprop"), "optimizer"), (dict(schedule="poly"), "schedule"), (dict(loss="hinge"), "loss"),
    (dict(folds=5, fold=5), "fold"), (dict(val_split=1.5), "val-split"), (dict(label_smoothing=1.0), "smoothing"),
])
def test_bad_config_is_a_config_error(tmp_path, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        train(TrainConfig(arch="lenet", dataset="digits", **kw), out=tmp_path / "x.safetensors", device="cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_losses_train(loss):
    res = train(TrainConfig(arch="lenet", dataset="digits", epochs=15, loss=loss, seed=0), device="cpu")
    assert res.metrics["test_acc"] > 0.6  # chance is 0.1


def test_loss_values():
    from interpcli.training import make_loss

    torch.manual_seed(0)
    out, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    onehot = torch.nn.functional.one_hot(y, 4).float()
    assert make_loss("l1", 4, 0.0)(out, y) == pytest.approx(float((out - onehot).abs().mean()))
    bce = -(onehot * torch.log(torch.sigmoid(out)) + (1 - onehot) * torch.log(1 - torch.sigmoid(out))).mean()
    assert make_loss("bce", 4, 0.0)(out, y) == pytest.approx(float(bce), rel=1e-5)
    smooth = onehot * 0.9 + 0.1 / 4
    ce = -(smooth * torch.log_softmax(out, 1)).sum(1).mean()
    assert make_loss("ce", 4, 0.1)(out, y) == pytest.approx(float(ce), rel=1e-5)


def test_schedules_shape():
    assert lr_factor("cosine", 0) == 1 and lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("onecycle", 0) == pytest.approx(0.04) and lr_factor("onecycle", 0.25) == pytest.approx(1)
    assert lr_factor("onecycle", 0.999) < 0.01
    assert lr_factor("step", 0.6) == pytest.approx(0.1) and lr_factor("constant", 0.9) == 1


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "interpcli", "train", "-a", "lenet", "-d", "digits", "-e", "2", "-b", "64", "-q", "--device", "cpu",
           "-o", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_metadata(out)
    assert meta["world_size"] == 2 and meta["metrics"]["train_acc"] > 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.log.jsonl", "ddp.safetensors"]
    assert r.stdout.count("ddp.safetensors") == 1  # only rank 0 reports
