"""The regularisation path over a :class:`~interpcli.sparse.features.FeatureSet`: every point
solved, evaluated on the three splits and recorded, with a resumable state.

    res = run_path(fs, PathConfig(alpha=0.99, k=100), state_dir=Path(".out.sparsify-state"))
    res.points[i]     # λ, non-zeros (overall, per class), train/val/test accuracy and loss, ...
    res.layer(i)      # (W, b) of point i, on standardised features, float64

The state folder holds one file per finished point (its weights, sparse) and ``state.json``
(what the path is computed on and with, and the records so far), written after each λ; a run
with ``resume`` continues after the last finished point and gives the same path as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import artifacts
from ..errors import ArtifactError, ConfigError
from .features import SPLITS, FeatureSet
from .solver import (
    SolverConfig,
    check_alpha,
    check_epsilon,
    cross_entropy,
    elastic_net_path,
    gradient,
    lambda_grid,
    lambda_max,
)

__all__ = ["PathConfig", "PathResult", "run_path", "evaluate_layer", "layer_record"]

Progress = Callable[[int, int, str], None]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass
class PathConfig:
    """The objective (alpha, group), the grid (k values from λ_max down to epsilon·λ_max) and
    the solver's settings."""

    alpha: float = 0.99
    k: int = 100
    epsilon: float = 1e-3
    group: bool = False
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)
    dtype: str = "float32"

    def check(self) -> None:
        check_alpha(self.alpha)
        check_epsilon(self.epsilon)
        if not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"the path needs at least 2 λ values (-k), got {self.k}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be {' or '.join(DTYPES)}, got '{self.dtype}'")
        s = self.solver
        if not s.tol > 0 or s.lookbehind < 1 or s.max_iter < 1:
            raise ConfigError(f"the solver needs tol > 0, lookbehind >= 1 and max_iter >= 1; got tol={s.tol}, "
                              f"lookbehind={s.lookbehind}, max_iter={s.max_iter}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PathResult:
    lambdas: list[float]
    lambda_max: float
    points: list[dict[str, Any]]
    weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per point: flat indices, values, bias
    shape: tuple[int, int]
    resumed_from: int = 0

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (C, d), b (C,)) float64 of point ``i`` on standardised features."""
        idx, val, b = self.weights[i]
        W = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.float64)
        W[idx] = val.double()
        return W.reshape(self.shape), b.double()


def evaluate_layer(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> tuple[float | None,
                                                                                                 float | None]:
    """(accuracy, mean cross-entropy) of the layer on (X, y); (None, None) on an empty split."""
    if len(X) == 0:
        return None, None
    Z = torch.addmm(b.to(X), X, W.to(X).T)
    return float((Z.argmax(1) == y).double().mean()), float(cross_entropy(Z, y))


def layer_record(data: dict[str, tuple[torch.Tensor, torch.Tensor]], W: torch.Tensor,
                 b: torch.Tensor) -> dict[str, Any]:
    """Sparsity and per-split accuracy / loss of a layer (C, d)."""
    per_class = (W != 0).sum(1)
    rec: dict[str, Any] = {"nnz": int(per_class.sum()), "nnz_per_class": per_class.tolist(),
                           "features_per_class": float(per_class.double().mean()),
                           "features_used": int((W != 0).any(0).sum())}
    for s in SPLITS:
        rec[f"{s}_acc"], rec[f"{s}_loss"] = evaluate_layer(*data[s], W, b)
    return rec


# ---------------------------------------------------------------------------------------------- state

def _key(fs: FeatureSet, cfg: PathConfig) -> str:
    spec = {"features": fs.digest(), "config": cfg.to_dict()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _save_point(state_dir: Path, i: int, W: torch.Tensor, b: torch.Tensor, records: list[dict], key: str,
                L: float, lams: list[float], lam_max: float) -> None:
    flat = W.reshape(-1).cpu()
    idx = flat.nonzero()[:, 0]
    artifacts.save_tensors(state_dir / f"point-{i:04d}.safetensors",
                           {"index": idx, "value": flat[idx], "bias": b.cpu()}, {"kind": "sparsify-point", "i": i,
                            "format_version": artifacts.CHECKPOINT_FORMAT_VERSION})
    artifacts.save_json(state_dir / "state.json", {"kind": "sparsify-state", "key": key, "done": i + 1, "step": L,
                                                   "lambdas": lams, "lambda_max": lam_max, "points": records})


def _load_state(state_dir: Path, key: str) -> tuple[dict, list] | None:
    f = state_dir / "state.json"
    if not f.is_file():
        return None
    try:
        state = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if state.get("key") != key:
        raise ConfigError(f"the saved path in '{state_dir}' was computed on other features or with other settings; "
                          "run without --resume to start again")
    weights = []
    for i in range(int(state["done"])):
        t, _ = artifacts.load_tensors(state_dir / f"point-{i:04d}.safetensors")
        weights.append((t["index"], t["value"], t["bias"]))
    return state, weights


# ---------------------------------------------------------------------------------------------- path

def run_path(fs: FeatureSet, cfg: PathConfig | None = None, *, device: torch.device | str = "cpu",
             state_dir: Path | None = None, resume: bool = False, progress: Progress | None = None) -> PathResult:
    """Solve the path on the standardised features of ``fs`` and record every point.

    ``progress(done, k, label)`` is called after each λ (label: λ index, non-zeros, validation
    accuracy).  With ``state_dir`` every finished point is saved there; with ``resume`` the
    path continues from what it holds (else it is emptied first)."""
    cfg = cfg or PathConfig()
    cfg.check()
    dt = DTYPES[cfg.dtype]
    data = {s: (fs.standardised(s, dt, device), fs.y[s].to(device)) for s in SPLITS}
    X, y = data["train"]
    c, d = fs.num_classes, fs.num_features
    lam_max = lambda_max(X, y, c, cfg.alpha, cfg.group)
    lams = lambda_grid(lam_max, cfg.k, cfg.epsilon)
    key = _key(fs, cfg)
    points: list[dict] = []
    weights: list = []
    start: dict[str, Any] = {}
    state: dict[str, Any] = {}
    if state_dir is not None:
        loaded = _load_state(state_dir, key) if resume else None
        if loaded is None:
            shutil.rmtree(state_dir, ignore_errors=True)
            state_dir.mkdir(parents=True)
        else:
            state, weights = loaded
            points = list(state["points"])
    resumed = len(points)
    if resumed:
        res = PathResult(lams, lam_max, points, weights, (c, d))
        W0, b0 = (t.to(device, dt) for t in res.layer(resumed - 1))
        start = {"W0": W0, "b0": b0, "L0": float(state["step"]), "lam_prev": lams[resumed - 1],
                 "grad0": gradient(X, y, W0, b0)[0]}
    solutions = elastic_net_path(X, y, c, lams[resumed:], cfg.alpha, group=cfg.group, cfg=cfg.solver, **start)
    for i, sol in enumerate(solutions, start=resumed):
        rec = {"index": i, "lambda": sol.lam, **layer_record(data, sol.W, sol.b), "objective": sol.objective,
               "kkt": sol.kkt, "iterations": sol.iterations, "converged": sol.converged, "seconds": sol.seconds}
        points.append(rec)
        flat = sol.W.reshape(-1).cpu()
        idx = flat.nonzero()[:, 0]
        weights.append((idx, flat[idx], sol.b.cpu()))
        if state_dir is not None:
            try:
                _save_point(state_dir, i, sol.W, sol.b, points, key, sol.step, lams, lam_max)
            except OSError as e:  # a full disk: what was saved stays for --resume, an empty state goes
                if i == 0:
                    shutil.rmtree(state_dir, ignore_errors=True)
                kept = f"; the path up to λ {i} is kept there (--resume continues)" if i > 0 else ""
                raise ArtifactError(f"cannot save the path in '{state_dir}' ({e.strerror or e}){kept}") from None
        if progress is not None:
            val = f"  val {100 * rec['val_acc']:.1f}%" if rec["val_acc"] is not None else ""
            progress(i + 1, len(lams), f"λ {i + 1}/{len(lams)}  nnz {rec['nnz']} "
                                       f"({rec['features_per_class']:.1f}/class){val}")
    return PathResult(lams, lam_max, points, weights, (c, d), resumed)
