"""Shared fixtures.  Tests never download; real data is used from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("INTERP_DEVICE", os.environ.get("INTERP_TEST_DEVICE", "cpu"))


def shared_npz(name: str) -> Path:
    p = SHARED_DATA / f"{name}.npz"
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def one_line_error(r, *needles: str) -> str:
    """A CliRunner result that is bad input: exit 2, nothing on stdout, no traceback, one
    ``Error: ...`` line on stderr (containing every needle); returns that line."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and r.stdout == "", r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> Path:
    """A LeNet trained briefly on the embedded digits dataset (shared by read-only tests)."""
    from interpcli import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt") / "lenet.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=3, seed=0, val_split=0.1, snapshot_every=5), out=out,
          device="cpu")
    return out
