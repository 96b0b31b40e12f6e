"""Interruption and unexpected failures (issue 17, item 3): SIGINT and SIGTERM partway through a real
`interp explain` / `occlude` / `train` process exit 130 / 143 with one line on stderr, no traceback,
no temporary file, and the previous output (replaced with --force) intact; the steps a signal must
not cut in two are held (`interrupts.deferred`); an unexpected exception is one `Error:` line and
exit 1, its traceback only with --debug / $INTERP_DEBUG."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interpcli import artifacts, interrupts
from interpcli.cli import app
from interpcli.metadata import read_metadata

from .conftest import ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="1")
ENV.pop("INTERP_DEBUG", None)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _leftovers(folder: Path) -> list[str]:
    """Temporary files and folders of an atomic write or a staged folder (``.NAME.XXXX``)."""
    return sorted(p.name for p in folder.rglob(".*") if p.name != ".interp-manifest")


def _interrupt(args: list[str], sig: int, ready, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``interp ARGS``, send ``sig`` once ``ready()`` says the work is under way, wait for the end."""
    proc = subprocess.Popen([sys.executable, "-m", "interpcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=ENV)
    t0 = time.monotonic()
    try:
        while not ready(proc.pid):
            assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
            assert time.monotonic() - t0 < timeout, "never got under way"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _staging_or_cpu(parent: Path, name: str, cpu: float):
    """Under way: the command's temporary folder exists (its first results are being written), or it
    has used ``cpu`` seconds (imports take ~2.5 s)."""
    return lambda pid: any(parent.glob(f".{name}.*")) or _cpu_seconds(pid) >= cpu


CASES = {  # (arguments after the checkpoint, the output's name); each runs ~10-20 s of CPU uninterrupted
    "explain": (["-m", "occlusion", "-p", "window=2", "-p", "stride=1", "--indices", "0:360", "--chunk", "32"], "o"),
    "occlude": (["--window", "2", "--stride", "1", "--indices", "0:240"], "o"),
}


@pytest.mark.parametrize("command,sig", [
    pytest.param("explain", signal.SIGTERM, id="explain-SIGTERM"),
    pytest.param("explain", signal.SIGINT, id="explain-SIGINT", marks=pytest.mark.slow),
    pytest.param("occlude", signal.SIGINT, id="occlude-SIGINT", marks=pytest.mark.slow),
    pytest.param("occlude", signal.SIGTERM, id="occlude-SIGTERM", marks=pytest.mark.slow),
])
def test_a_signal_partway_leaves_the_previous_output(digits_ckpt, tmp_path, command, sig):
    args, name = CASES[command]
    out = tmp_path / name
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), "--indices", "0:2", "-m", "grad", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = _interrupt([command, digits_ckpt, *args, "--force", "-q", "-o", out], sig,
                   _staging_or_cpu(tmp_path, name, 4.5))
    assert r.returncode == 128 + sig, (r.returncode, r.stderr)
    assert r.stderr.splitlines() == ["interrupted"] and r.stdout == "", r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old output, whole
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="SIGINT"),
                                 pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow)])
def test_train_interrupted_keeps_the_old_checkpoint_and_a_state_to_resume(tmp_path, sig):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"an old checkpoint")
    state = tmp_path / "m.state.safetensors"
    r = _interrupt(["train", "-a", "lenet", "-d", "digits", "-e", "200", "--force", "-q", "-o", out], sig,
                   lambda pid: state.exists())
    assert r.returncode == 128 + sig, (r.returncode, r.stderr)
    assert r.stderr.splitlines() == ["interrupted; rerun with --resume to continue"], r.stderr
    assert out.read_bytes() == b"an old checkpoint"
    assert _leftovers(tmp_path) == []
    assert read_metadata(state)["epoch"] >= 1  # a complete state: --resume continues from it


# ---------------------------------------------------------------------------------------------- in-process

def test_deferred_holds_a_signal_until_the_block_ends():
    restore = interrupts.handle_signals()
    done = []
    try:
        with pytest.raises(interrupts.Terminated):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler would run here
                done.append("the block finished")
        assert done == ["the block finished"] and interrupts.exit_code() == 143
    finally:
        restore()


def test_an_interrupted_staged_folder_or_atomic_write_leaves_nothing(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with artifacts.staged_folder(out, force=True) as tmp:
            (tmp / "b.txt").write_text("new")
            raise KeyboardInterrupt
    with pytest.raises(interrupts.Terminated):
        with artifacts.atomic_write(out / "a.txt") as f:
            f.write(b"half")
            raise interrupts.Terminated
    assert [p.name for p in tmp_path.iterdir()] == ["o"] and [p.name for p in out.iterdir()] == ["a.txt"]
    assert (out / "a.txt").read_text() == "old"


# ---------------------------------------------------------------------------------------------- --debug

def _boom(*args, **kwargs):
    raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")


@pytest.mark.parametrize("debug", [None, "--debug", "env"])
def test_an_unexpected_error_is_one_line_and_exit_1_unless_debug(digits_ckpt, tmp_path, monkeypatch, debug):
    from interpcli.cli import explain as explain_cli

    monkeypatch.setattr(explain_cli, "explain_checkpoint", _boom)
    args = ["explain", str(digits_ckpt), "-q", "-o", str(tmp_path / "o")]
    env = {"INTERP_DEBUG": "1" if debug == "env" else None}
    r = CliRunner().invoke(app, ["--debug", *args] if debug == "--debug" else args, env=env)
    assert r.exit_code == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    if debug is None:
        assert lines == ["Error: RuntimeError: CUDA out of memory. (run with --debug for the traceback)"]
    else:
        assert lines[0] == "Traceback (most recent call last):" and "in _boom" in r.stderr
        assert lines[-1] == "Error: RuntimeError: CUDA out of memory."


def test_bad_input_stays_exit_2_with_debug_and_shows_where(tmp_path):
    r = CliRunner().invoke(app, ["--debug", "eval", str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].startswith("Error: checkpoint not found")
    assert "Traceback" in r.stderr


@pytest.mark.slow
def test_a_real_process_prints_one_line_for_an_unexpected_error(digits_ckpt, tmp_path):
    code = ("import sys, interpcli.cli.explain as m\n"
            "def boom(*a, **k): raise ValueError('shapes (3,) and (4,) do not align')\n"
            "m.explain_checkpoint = boom\n"
            "from interpcli.cli import main\nmain(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, "explain", str(digits_ckpt), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == ["Error: ValueError: shapes (3,) and (4,) do not align (run with --debug for the "
                                     "traceback)"]
