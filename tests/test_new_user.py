"""What a new user hit: short runs on real data (--limit-train/--limit-test), progress in logs,
nothing cut at 80 columns in pipes, Ctrl-C, `interp` alone, --split val, resume --epochs, and a
cheap `import interpcli` / `interp --version` / `interp info`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from interpcli import TrainConfig, evaluate_checkpoint, explain, load_model, read_metadata, train
from interpcli.data import checkpoint_dataset, load_dataset, stratified_subset
from interpcli.errors import ConfigError
from interpcli.inputs import InputSpec
from interpcli.methods import get_method
from interpcli.ops.explain import rows_independent
from interpcli.training import sidecar

from .conftest import ROOT
from .test_train import _StopAt

ENV = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="1")
ENV.pop("COLUMNS", None)
ENV.pop("TERMINAL_WIDTH", None)


def interp(*args, **kw) -> subprocess.CompletedProcess:
    """`interp ARGS` with stdout and stderr to pipes (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "interpcli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, stdin=subprocess.DEVNULL, **kw)




# ---------------------------------------------------------------------------------------------- 1. short runs

def test_stratified_subset_keeps_class_shares_and_is_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_subset(y, 10, seed=3)
    assert len(idx) == 10 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx].numpy()).tolist() == [5, 3, 2]
    assert np.array_equal(idx, stratified_subset(y, 10, seed=3))
    assert not np.array_equal(idx, stratified_subset(y, 10, seed=4))
    assert np.array_equal(stratified_subset(y, 500), np.arange(100))  # more than there is: everything
    assert np.bincount(y[stratified_subset(y, 11)].numpy()).tolist() == [6, 3, 2]  # largest remainder


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="--limit-train"):
        TrainConfig(arch="lenet", dataset="digits", limit_train=0).validate()
    with pytest.raises(ConfigError, match="--limit-test"):
        TrainConfig(arch="lenet", dataset="digits", limit_test=-3).validate()
    with pytest.raises(ConfigError, match="less than the 10 classes"):
        load_dataset("digits").limit(train=5)


def test_limited_run_records_its_subsets_and_eval_explain_reuse_them(tmp_path):
    out = tmp_path / "short.safetensors"
    res = train(TrainConfig(arch="lenet", dataset="digits", epochs=1, seed=7, limit_train=200, limit_test=50,
                            val_split=0.2), out=out, device="cpu")
    meta = read_metadata(out)
    d = meta["dataset"]
    assert (d["limit_train"], d["limit_test"], d["limit_seed"]) == (200, 50, 7)
    assert (d["n_train"], d["n_test"], d["n_val"], d["n_train_used"]) == (200, 50, 40, 160)
    assert meta["train_config"]["limit_train"] == 200

    ds, _ = checkpoint_dataset(meta)
    full = load_dataset("digits")
    te = stratified_subset(full.y_test, 50, 7, 1)
    assert torch.equal(ds.x_test, full.x_test[te]) and torch.equal(ds.y_test, full.y_test[te])
    assert len(ds.split("val")[1]) == 40

    ev = evaluate_checkpoint(out, device="cpu")
    assert ev["n"] == 50 and abs(ev["accuracy"] - res.metrics["test_acc"]) < 1e-9  # the subset tested in training
    assert evaluate_checkpoint(out, device="cpu", limit_test=0)["n"] == 360
    assert evaluate_checkpoint(out, device="cpu", limit_test=20)["n"] == 20
    val = evaluate_checkpoint(out, device="cpu", split="val")
    assert val["n"] == 40 and abs(val["accuracy"] - res.metrics["val_acc"]) < 1e-9  # the same validation rows

    inputs = InputSpec(indices="0:3").load(load_model(out))  # explain's default inputs: the same test subset
    assert inputs.sources[0] == "digits:test:0" and torch.equal(inputs.images, full.x_test[te[:3]].float() / 255)


def test_eval_split_val_needs_a_run_with_validation(tmp_path):
    out = tmp_path / "noval.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=1, limit_train=100), out=out, device="cpu")
    with pytest.raises(ConfigError, match="no validation split.*--val-split"):
        evaluate_checkpoint(out, device="cpu", split="val")
    r = interp("eval", out, "--split", "val", "--device", "cpu")
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "--val-split" in r.stderr


def test_resume_refuses_a_changed_limit(tmp_path):
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=3, limit_train=300)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, device="cpu", reporter=_StopAt(1))
    with pytest.raises(ConfigError, match="limit_train"):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=3, limit_train=400), out=out, resume=True,
              device="cpu")
    train(cfg, out=out, resume=True, device="cpu")  # the same limit continues


def test_npz_and_folder_datasets_say_they_train_without_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_test=rng.integers(0, 255, (10, 8, 8), dtype=np.uint8), y_test=np.arange(10) % 2)
    runner = CliRunner()
    from interpcli.cli import app

    r = runner.invoke(app, ["train", "-a", "lenet", "-d", str(npz), "-e", "1", "-o", str(tmp_path / "a.safetensors")])
    assert r.exit_code == 0, r.output
    assert "no default augmentation" in r.output and "--flip" in r.output
    r = runner.invoke(app, ["train", "-a", "lenet", "-d", str(npz), "-e", "1", "--no-flip", "-o",
                            str(tmp_path / "b.safetensors")])
    assert r.exit_code == 0 and "no default augmentation" not in r.output


def test_train_help_points_to_limit_train_not_a_pulses_option():
    r = interp("train", "--help")
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if "--dataset-arg" in l)
    assert "pulses n_train=5000" in line and "--limit-train" in line
    assert "--limit-test" in r.stdout


# ---------------------------------------------------------------------------------------------- 2. progress

def test_train_progress_is_plain_lines_outside_a_terminal(capsys):
    from interpcli.cli.train import RichReporter

    rep = RichReporter(quiet=False, live=False, interval=0)
    rep.start(TrainConfig(arch="lenet", dataset="digits", epochs=3), steps_per_epoch=4, start_epoch=0)
    for i in range(1, 5):
        rep.step(0, i, 1.5, 0.25, 1000.0)
    rep.epoch({"epoch": 1, "loss": 1.2, "train_acc": 0.3, "test_acc": 0.4, "images_per_s": 900, "seconds": 2.0})
    rep.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/3  step 1/4  loss 1.5000  acc 0.250  1000 img/s  ETA ")
    assert "(run " in lines[0] and len(lines) == 5 and lines[-1].startswith("epoch 1/3  loss 1.2000")
    assert not any("\x1b" in l for l in lines)  # no escape codes, no live bar

    rep = RichReporter(quiet=False, live=False)  # the real interval: ~10 s between lines
    rep.start(TrainConfig(arch="lenet", dataset="digits", epochs=3), steps_per_epoch=4, start_epoch=0)
    for i in range(1, 5):
        rep.step(0, i, 1.5, 0.25, 1000.0)
    assert capsys.readouterr().err == ""


def test_explain_reports_rows_and_chunks_give_identical_results(digits_ckpt):
    model = load_model(digits_ckpt)
    inputs = InputSpec(indices="0:150").load(model)
    methods = ["grad", "intgrad", "occlusion", "gds", "rise"]
    params = {"occlusion": {"window": 4, "stride": 2}, "gds": {"window": 4, "stride": 2, "views": 4, "k": 2},
              "rise": {"n_masks": 50, "s": 4}}
    with pytest.warns(UserWarning, match="completeness"):  # intgrad on a 3-epoch LeNet: not the point here
        whole = explain(model, inputs, methods, params=params, rows_per_call=10_000)
    calls = []
    with pytest.warns(UserWarning, match="completeness"):
        chunked = explain(model, inputs, methods, params=params, rows_per_call=64,
                          progress=lambda done, total, m: calls.append((done, total, m)))
    for m in methods:  # chunks of whole CPU batches (64): the same numbers; intgrad's steps batch differently
        same = torch.equal if m != "intgrad" else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        assert same(whole.maps[m], chunked.maps[m]), m
    assert [c for c in calls if c[2] == "gds"] == [(0, 150, "gds"), (64, 150, "gds"), (128, 150, "gds"),
                                                   (150, 150, "gds")]
    # methods whose random draws are shaped by the batch run in one call
    assert not rows_independent(get_method("smoothgrad"), {})
    assert not rows_independent(get_method("intgrad"), {"baseline": "uniform"})
    assert rows_independent(get_method("intgrad"), {}) and rows_independent(get_method("gds"), {})
    calls.clear()
    explain(model, inputs, ["smoothgrad"], params={"smoothgrad": {"n_samples": 2}}, rows_per_call=64,
            progress=lambda *c: calls.append(c))
    assert calls == [(0, 150, "smoothgrad"), (150, 150, "smoothgrad")]


def test_job_progress_plain_lines(capsys):
    from interpcli.cli._console import JobProgress, duration

    with JobProgress("explain", unit="rows", live=False, interval=0) as p:
        p.update(10, 40, "gds (1/1)")
    line = capsys.readouterr().err.strip()
    assert line.startswith("explain: gds (1/1)  10/40 rows  ") and "rows/s  ETA " in line
    assert duration(75) == "1:15" and duration(3725) == "1:02:05" and duration(None) == "?"


def test_ctrl_c_in_train_says_how_to_continue(tmp_path):
    out = tmp_path / "p.safetensors"
    args = ["-m", "interpcli", "train", "-a", "pulse-cnn", "-d", "pulses", "--dataset-arg", "n_train=256",
            "--dataset-arg", "n_test=64", "-e", "200", "-b", "64", "--device", "cpu", "-o", str(out)]
    proc = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    state, deadline = sidecar(out, ".state.safetensors"), time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.rstrip().splitlines()[-1] == "interrupted; rerun with --resume to continue"


def test_ctrl_c_elsewhere_is_one_line(monkeypatch, digits_ckpt):
    import interpcli.cli.evaluate as cli_eval
    from interpcli.cli import app

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_eval, "evaluate_checkpoint", stop)
    r = CliRunner().invoke(app, ["eval", str(digits_ckpt)])
    assert r.exit_code == 130 and r.output.strip() == "interrupted"


# ---------------------------------------------------------------------------------------------- 3. no cut at 80

def test_nothing_is_cut_in_pipes(tmp_path):
    names = [f"class_with_a_rather_long_name_{k}" for k in range(3)]
    rng = np.random.default_rng(0)
    npz = tmp_path / "named.npz"
    np.savez(npz, x_train=rng.integers(0, 255, (30, 1, 8, 8), dtype=np.uint8), y_train=np.arange(30) % 3,
             x_test=rng.integers(0, 255, (9, 1, 8, 8), dtype=np.uint8), y_test=np.arange(9) % 3,
             classes=np.array(names))
    ckpt = tmp_path / "named.safetensors"
    train(TrainConfig(arch="lenet", dataset=str(npz), epochs=1), out=ckpt, device="cpu")

    r = interp("eval", ckpt, "--dataset", npz, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    header = next(l for l in r.stdout.splitlines() if "class" in l and "acc" in l)
    assert all(n in header for n in names)  # column titles in full
    assert sum(any(l.startswith(f"│ {n} ") for l in r.stdout.splitlines()) for n in names) == 3

    r = interp("info", ckpt)
    assert r.returncode == 0
    assert any(f'["{names[0]}", "{names[1]}", "{names[2]}"]' in l for l in r.stdout.splitlines())

    r = interp("--help")
    assert any("interp train --arch resnet20 --dataset cifar10 --data-dir ../shared/data --epochs 30 --out "
               "runs/r20.safetensors" in l for l in r.stdout.splitlines())
    r = interp("eval", "--help")
    assert "Dataset [default: the checkpoint's]." in r.stdout  # not eaten as rich markup
    assert any("Evaluate on a stratified subset of N test images (seeded as the run); 0: the whole test split. "
               "Default: the subset the checkpoint was trained with, if any." in l for l in r.stdout.splitlines())
    r = interp("explain", "--help")
    assert any("CUDA only: TF32 matmuls and convolutions" in l and "hold to ~1e-3 only); default full float32." in l
               for l in r.stdout.splitlines())


def test_epoch_lines_are_not_wrapped_in_logs(tmp_path):
    r = interp("train", "-a", "lenet", "-d", "digits", "-e", "1", "--val-split", "0.1", "--device", "cpu", "-o",
               tmp_path / "m.safetensors")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stderr.splitlines() if l.startswith("epoch 1/1"))
    assert "val_acc" in line and "test_acc" in line and line.rstrip().endswith("s")


# ---------------------------------------------------------------------------------------------- 4. small things

def test_bare_interp_prints_the_help():
    r = interp()
    assert r.returncode == 0 and "Usage: interp" in r.stdout and "Error" not in r.stderr


def test_examples_come_at_the_end_of_the_help():
    for cmd in ("eval", "train", "explain"):
        out = interp(cmd, "--help").stdout
        assert out.index("Example:") > out.index("--help")


def test_resume_may_change_epochs(tmp_path):
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=2, limit_train=200)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, device="cpu", reporter=_StopAt(1))
    res = train(TrainConfig(arch="lenet", dataset="digits", epochs=4, limit_train=200), out=out, resume=True,
                device="cpu")
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.history[1]["schedule_change"] == {"after_epoch": 1, "epochs_before": 2, "epochs": 4}
    meta = read_metadata(out)
    assert meta["train_config"]["epochs"] == 4 and meta["schedule_changes"] == [res.history[1]["schedule_change"]]
    assert [json.loads(l)["epoch"] for l in sidecar(out, ".log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="finished run"):  # its state is gone: nothing to extend
        train(TrainConfig(arch="lenet", dataset="digits", epochs=6, limit_train=200), out=out, resume=True,
              device="cpu", force=True)


def test_keep_state_lets_a_finished_run_be_extended(tmp_path):
    out = tmp_path / "m.safetensors"
    first = train(TrainConfig(arch="lenet", dataset="digits", epochs=2, limit_train=200), out=out, device="cpu",
                  keep_state=True)
    assert sidecar(out, ".state.safetensors") in first.files
    with pytest.raises(ConfigError, match="has finished; pass --force"):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=3, limit_train=200), out=out, resume=True,
              device="cpu")
    res = train(TrainConfig(arch="lenet", dataset="digits", epochs=3, limit_train=200), out=out, resume=True,
                device="cpu", force=True)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.history[:2] == first.history  # the first two epochs are the finished run's, not redone
    assert res.history[2]["schedule_change"] == {"after_epoch": 2, "epochs_before": 2, "epochs": 3}
    assert read_metadata(out)["train_config"]["epochs"] == 3
    assert not sidecar(out, ".state.safetensors").exists()  # not kept this time


def test_resume_refuses_fewer_epochs_than_done(tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=4, limit_train=200), out=out, device="cpu",
              reporter=_StopAt(2))
    with pytest.raises(ConfigError, match="done 2 epochs already"):
        train(TrainConfig(arch="lenet", dataset="digits", epochs=1, limit_train=200), out=out, resume=True,
              device="cpu")


def test_import_interpcli_version_and_info_do_not_import_torch(digits_ckpt):
    code = f"""
import sys, interpcli
assert "torch" not in sys.modules, "import interpcli"
from interpcli.cli import main
for argv in (["--version"], ["info", {str(digits_ckpt)!r}, "--json"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
    assert "torch" not in sys.modules and "numpy" not in sys.modules, argv
from interpcli import evaluate, train, attribute, TrainConfig, CHECKPOINT_FORMAT_VERSION
import interpcli.evaluate
assert callable(interpcli.evaluate) and interpcli.evaluate is evaluate  # the function, not the submodule
assert set(interpcli.__all__) == {{"__version__", *interpcli._LAZY}}
assert all(getattr(interpcli, n) is not None for n in interpcli.__all__)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("0.1.0\n") and '"arch": "lenet"' in r.stdout


def test_gitignore_covers_the_default_outputs():
    folders = sorted({m for f in (ROOT / "interpcli" / "cli").glob("*.py")
                      for m in re.findall(r'Path\("([a-z-]+-out)"\)', f.read_text())})
    assert {"explain-out", "occlude-out", "consistency-out"} <= set(folders)
    paths = [f"{d}/a.png" for d in folders] + ["lenet-digits.safetensors", "lenet-digits.log.jsonl",
                                               "lenet-digits.state.safetensors", "lenet-digits.kernels.npz"]
    r = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert sorted(r.stdout.splitlines()) == sorted(paths), r.stdout


def test_every_cli_module_and_command_is_in_the_lazy_table():
    from interpcli.cli import app
    from interpcli.cli._app import COMMAND_MODULES

    modules = {p.stem for p in (ROOT / "interpcli" / "cli").glob("*.py") if not p.stem.startswith("_")}
    assert set(COMMAND_MODULES.values()) == modules
    assert {c.name for c in app.registered_commands} == set(COMMAND_MODULES)


def test_a_warning_is_one_line_on_stderr(digits_ckpt, tmp_path):
    Image.fromarray(np.full((16, 24), 128, np.uint8)).save(tmp_path / "wide.png")
    r = interp("explain", digits_ckpt, tmp_path / "wide.png", "-m", "grad", "-o", tmp_path / "o", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"Warning: image '{tmp_path / 'wide.png'}' is 24x16 px; resized to the model's "
                                     "8x8 input (bilinear, aspect ratio not kept)"]
