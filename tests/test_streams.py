"""Data on stdout, people's messages on stderr, and progress apart from tables.

A command that writes files lists them on stdout and prints its summary table on stderr
(`print_table`); `eval` and `info` write no files, so their table is their data, on stdout.
Progress (live bars, plain lines every ~10 s) can be turned off without losing the tables:
`INTERP_PROGRESS=0` (a number: the seconds between plain lines), whereas `--quiet` silences
everything but errors and warnings.  So `INTERP_PROGRESS=0 interp sparsify ... 2> table.txt` and
`interp eval ... > table.txt` keep clean tables (the recipes' summary.md is made of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interpcli import TrainConfig
from interpcli.cli import app
from interpcli.cli._console import JobProgress, progress_interval
from interpcli.errors import ConfigError

from .conftest import ROOT
from .test_sparsify import _features_npz


def _interp(*args, progress: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="1")
    env.pop("INTERP_PROGRESS", None)
    if progress is not None:
        env["INTERP_PROGRESS"] = progress
    return subprocess.run([sys.executable, "-m", "interpcli", *map(str, args)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=300)


@pytest.mark.parametrize("raw, seconds", [(None, 10.0), ("", 10.0), ("on", 10.0), ("0", None), ("off", None),
                                          ("false", None), ("2.5", 2.5), (" 60 ", 60.0), ("1e-9", 1e-9)])
def test_the_progress_setting(monkeypatch, raw, seconds):
    if raw is None:
        monkeypatch.delenv("INTERP_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("INTERP_PROGRESS", raw)
    assert progress_interval() == seconds


@pytest.mark.parametrize("raw", ["-1", "sometimes", "nan", "inf"])
def test_a_bad_progress_setting_is_refused(monkeypatch, raw):
    monkeypatch.setenv("INTERP_PROGRESS", raw)
    with pytest.raises(ConfigError, match="INTERP_PROGRESS must be 0"):
        progress_interval()


def test_no_progress_lines_with_progress_off(monkeypatch, capsys):
    monkeypatch.setenv("INTERP_PROGRESS", "1e-9")  # a plain line at every update
    with JobProgress("explain", unit="rows", live=False) as p:
        p.update(10, 40, "grad")
    assert capsys.readouterr().err.startswith("explain: grad  10/40 rows  ")
    monkeypatch.setenv("INTERP_PROGRESS", "0")
    with JobProgress("explain", unit="rows", live=False) as p:
        p.update(10, 40, "grad")
    assert capsys.readouterr().err == ""


def test_train_keeps_its_epoch_lines_without_progress(monkeypatch, capsys):
    from interpcli.cli.train import RichReporter

    for setting, steps in (("1e-9", 3), ("0", 0)):
        monkeypatch.setenv("INTERP_PROGRESS", setting)
        rep = RichReporter(quiet=False)
        rep.start(TrainConfig(arch="lenet", dataset="digits", epochs=2), steps_per_epoch=3, start_epoch=0)
        for i in range(1, 4):
            rep.step(0, i, 1.5, 0.25, 1000.0)
        rep.epoch({"epoch": 1, "loss": 1.2, "train_acc": 0.3, "test_acc": 0.4, "images_per_s": 900, "seconds": 2.0})
        rep.finish()
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == steps + 1 and lines[-1].startswith("epoch 1/2  loss 1.2000"), (setting, lines)


def test_sparsify_lists_files_on_stdout_and_its_table_on_stderr(tmp_path):
    """What --help says: stdout the files, stderr the table (and the progress, unless it is off)."""
    feats = _features_npz(tmp_path / "f.npz")
    args = ["sparsify", "--features", feats, "-k", "10"]

    r = _interp(*args, "-o", tmp_path / "a", progress="1e-9")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(tmp_path / "a" / f) for f in ("path.json", "path.png", "features.json")]
    assert "sparsify: λ 1/10" in r.stderr and "ETA " in r.stderr
    assert "sparse (absolute:5)" in r.stderr

    r = _interp(*args, "-o", tmp_path / "b", progress="0")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[0].strip() == "the chosen sparse layer and the dense one (accuracy in %)"
    assert "features per class" in lines[2] and "sparse (absolute:5)" in lines[4] and len(lines) == 6, r.stderr

    r = _interp(*args, "-q", "-o", tmp_path / "c", progress="1e-9")
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 3


def test_a_bad_progress_setting_is_one_error_line(tmp_path):
    feats = _features_npz(tmp_path / "f.npz")
    r = CliRunner().invoke(app, ["sparsify", "--features", str(feats), "-k", "4", "-o", str(tmp_path / "o")],
                           env={"INTERP_PROGRESS": "sometimes"})
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == "Error: INTERP_PROGRESS must be 0 (no progress) or the seconds between progress " \
        "lines; got 'sometimes'"
    assert not (tmp_path / "o").exists()


def test_eval_prints_its_table_on_stdout(digits_ckpt):
    r = _interp("eval", digits_ckpt, "--device", "cpu", progress="1e-9")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("digits test: accuracy ") and "confusion" in r.stdout.lower()


def test_the_help_of_json_and_quiet_says_what_they_do():
    r = CliRunner().invoke(app, ["sparsify", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    text = " ".join(r.stdout.split())
    assert "stdout lists the files (--json: the files, the selection and the dense layer); the chosen layer " \
        "against the dense one, a table, goes to stderr." in text
    assert "Print JSON on stdout instead of what it carries otherwise (a table, or the files written)." in text
    assert "no progress, tables or logs (INTERP_PROGRESS=0: no progress only)" in text
    assert Path(ROOT / "docs" / "cli.md").read_text().count("INTERP_PROGRESS") >= 1
