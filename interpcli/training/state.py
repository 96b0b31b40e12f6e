"""Files beside a checkpoint, and the training state kept for ``--resume`` (safetensors, no pickle).

The state (``NAME.state.safetensors``) holds the network's weights, the optimiser's tensors
(flattened to ``optim.<param id>.<name>``), its scalars and parameter groups, the config,
the epoch, step and history after the last finished epoch, and the input encoding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from .. import artifacts
from ..errors import ArtifactError, ConfigError
from ..models import Classifier
from .config import TrainConfig

__all__ = ["sidecar", "save_state", "load_state", "restore_state", "RESUME_IGNORED", "RESUME_CHANGEABLE"]


def sidecar(out: str | os.PathLike, suffix: str) -> Path:
    """``runs/m.safetensors`` + ``.log.jsonl`` -> ``runs/m.log.jsonl``."""
    p = Path(out)
    return p.with_name((p.stem if p.suffix == ".safetensors" else p.name) + suffix)



def _optim_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, d in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


RESUME_IGNORED = ("eval_batch_size", "amp", "channels_last", "compile", "data_dir")
# May differ on resume: more (or fewer, not below those done) epochs; the LR schedule follows the new total.
RESUME_CHANGEABLE = ("epochs",)


def save_state(path: Path, model: Classifier, opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, step: int,
                history: list[dict], encoding: dict) -> None:
    otensors, ometa = _optim_to_flat(opt)
    tensors = {f"model.{k}": v for k, v in model.net.state_dict().items()} | otensors
    meta = {"format_version": artifacts.CHECKPOINT_FORMAT_VERSION, "kind": "train-state", "config": cfg.to_dict(),
            "epoch": epoch, "step": step, "history": history, "optim": ometa, "encoding": encoding}
    artifacts.save_tensors(path, tensors, meta)


def load_state(path: Path, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"--resume: no training state at '{path}' (nothing to resume; a finished run's state is "
                          "deleted when its checkpoint is written unless it was trained with --keep-state)")
    tensors, meta = artifacts.load_tensors(path)
    if meta.get("kind") != "train-state":
        raise ArtifactError(f"'{path}' is not a training state file")
    # A key the older state lacks (an option added since) holds its default there.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    old = {**defaults, **meta["config"]}
    diff = [k for k, v in cfg.to_dict().items()
            if k not in RESUME_IGNORED + RESUME_CHANGEABLE and old.get(k) != v]
    if diff:
        desc = ", ".join(f"{k} ({old.get(k)!r} before, {getattr(cfg, k)!r} now)" for k in diff[:4])
        raise ConfigError(f"--resume: options differ from the interrupted run: {desc}")
    return tensors, meta


def restore_state(model: Classifier, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> tuple[int, int, list[dict]]:
    """Load a state's weights into ``model.net`` and its optimiser state into ``opt``;
    returns (epochs done, steps done, history)."""
    model.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _optim_from_flat(opt, tensors, meta["optim"])
    return meta["epoch"], meta["step"], meta["history"]
