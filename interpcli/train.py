"""Training: one dense loop that reads top to bottom (the airbench style), CPU or GPU.

    cfg = TrainConfig(arch="resnet20", dataset="cifar10", data_dir="../shared/data", epochs=5)
    result = train(cfg, out="runs/r20.safetensors")

Sections: Config, Data, Model and optimiser, Loss and schedule, State (resume), Loop,
Evaluation.  Everything random is seeded: the model by ``seed``, every epoch's order,
augmentation and dropout by ``(seed, epoch)``, so a run is bitwise reproducible on the
CPU and a resumed run continues exactly where the killed one stopped.

Files written beside ``out`` (``runs/r20.safetensors``):
``runs/r20.log.jsonl`` (one JSON object per epoch), ``runs/r20.kernels.npz`` (first-layer
kernels every ``snapshot_every`` steps) and, while training, ``runs/r20.state.safetensors``
(weights, optimiser state and history after the last finished epoch, for ``resume``).
Under ``torchrun`` the run is data-parallel and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import artifacts
from .data import DeviceLoader, load_dataset, train_val_split
from .data._registry import Dataset, get_dataset_info
from .data.loader import epoch_generator
from .device import autocast, configure_backends, resolve_device, seed_everything
from .errors import ArtifactError, ConfigError
from .models import Classifier, first_layer, get_model_info

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "evaluate_checkpoint", "checkpoint_dataset", "sidecar", "OPTIMIZERS", "SCHEDULES", "LOSSES"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
LOSSES = ("ce", "bce", "l1")


# ----------------------------------------------------------------------------------------
#   Config
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run.  ``None`` means: the arch's recipe, else the default.

    Attributes:
        arch, dataset: registry names (``interp models``, ``interp datasets``); ``dataset``
            may also be a path to an ``.npz`` file or an image folder.
        data_dir: where the dataset's files are (default ``$INTERP_DATA_DIR`` or ``./data``).
        dataset_options: loader options (``n_train`` for ``pulses``, ``image_size`` for ``folder``).
        classes: train on these classes only (names or indices), relabelled in this order.
        arch_kwargs: options of the architecture (``interp models --json`` lists them).
        epochs, batch_size: batch size is global (summed over ranks under torchrun).
        lr: peak learning rate for a batch of ``batch_size``.
        optimizer: sgd (Nesterov when momentum > 0), adam or adamw.
        schedule: per-step learning-rate shape: cosine, onecycle (linear warm-up over the
            first quarter then linear decay to 0), step (x0.1 at 50% and 75%), constant.
        weight_decay: applied to weights with 2+ dimensions only (not to biases or norms).
        loss: ce (cross-entropy), bce (one-vs-all binary cross-entropy) or l1 (L1 to one-hot).
        val_split / folds, fold: held-out validation inside the training split (stratified).
        snapshot_every: store the first layer's kernels every N optimiser steps (0: never).
        flip, translate: training augmentation; ``None`` uses the dataset's default.
        amp: bf16 autocast on CUDA.  channels_last: memory format of weights and batches (``None``: on).
    """

    arch: str
    dataset: str
    data_dir: str | None = None
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: list[str] | None = None
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    loss: str | None = None
    seed: int = 0
    val_split: float = 0.0
    folds: int = 0
    fold: int = 0
    snapshot_every: int = 0
    flip: bool | None = None
    translate: int | None = None
    eval_batch_size: int = 1000
    amp: bool = True
    channels_last: bool | None = None
    compile: bool = False

    _DEFAULTS = dict(epochs=10, batch_size=128, lr=0.05, optimizer="sgd", momentum=0.9, schedule="cosine",
                     weight_decay=5e-4, label_smoothing=0.0, loss="ce")

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` filled from the arch's recipe, then the defaults; validated."""
        info = get_model_info(self.arch)
        ds_aug = get_dataset_info(self.dataset).augment
        recipe = info.recipe
        out = dataclasses.replace(self)
        for k, v in self._DEFAULTS.items():
            if getattr(out, k) is None:
                setattr(out, k, recipe.get(k, v))
        if out.flip is None:
            out.flip = bool(recipe.get("flip", ds_aug["flip"]) if recipe.get("augment", True) else False)
        if out.translate is None:
            out.translate = int(recipe.get("translate", ds_aug["translate"]) if recipe.get("augment", True) else 0)
        out.validate()
        return out

    def validate(self) -> None:
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule '{self.schedule}'; valid: {', '.join(SCHEDULES)}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConfigError(f"unknown loss '{self.loss}'; valid: {', '.join(LOSSES)}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError("--weight-decay must be >= 0")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConfigError("--label-smoothing must be in [0, 1)")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ConfigError("--momentum must be in [0, 1)")
        if self.snapshot_every < 0:
            raise ConfigError("--snapshot-every must be >= 0")
        if self.translate is not None and self.translate < 0:
            raise ConfigError("--translate must be >= 0")
        if self.eval_batch_size <= 0:
            raise ConfigError("eval batch size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    checkpoint: Path | None
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    files: list[Path]


class Reporter(Protocol):
    """What the loop tells a progress display (the CLI's is rich; the library's is silent)."""

    def start(self, cfg: TrainConfig, steps_per_epoch: int, start_epoch: int) -> None: ...
    def step(self, epoch: int, i: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


class _Silent:
    def start(self, *a: Any) -> None: ...
    def step(self, *a: Any) -> None: ...
    def epoch(self, *a: Any) -> None: ...
    def finish(self) -> None: ...


def sidecar(out: str | os.PathLike, suffix: str) -> Path:
    """``runs/m.safetensors`` + ``.log.jsonl`` -> ``runs/m.log.jsonl``."""
    p = Path(out)
    return p.with_name((p.stem if p.suffix == ".safetensors" else p.name) + suffix)


# ----------------------------------------------------------------------------------------
#   Distributed (torchrun) helpers
# ----------------------------------------------------------------------------------------

def _dist_setup(device_name: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_name)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _dist_teardown(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _all_reduce(values: list[float], world: int, device: torch.device) -> list[float]:
    if world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------------------
#   Loss and schedule
# ----------------------------------------------------------------------------------------

def make_loss(kind: str, num_classes: int, smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "ce":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)

    def onehot(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        t = F.one_hot(y, num_classes).to(dtype)
        return t * (1 - smoothing) + smoothing / num_classes

    if kind == "bce":
        # One-vs-all BCE on one-hot targets, averaged over batch and classes (the B-cos papers' loss).
        return lambda out, y: F.binary_cross_entropy_with_logits(out, onehot(y, out.dtype))
    return lambda out, y: F.l1_loss(out, onehot(y, out.dtype))


def lr_factor(schedule: str, t: float) -> float:
    """Multiplier of the peak learning rate at training progress ``t`` in [0, 1)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return 0.04 + 0.96 * t / 0.25 if t < 0.25 else (1 - t) / 0.75
    if schedule == "step":
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    return 1.0


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    betas = (cfg.momentum, 0.999) if cfg.momentum else (0.9, 0.999)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=betas)


# ----------------------------------------------------------------------------------------
#   State for --resume (safetensors, no pickle)
# ----------------------------------------------------------------------------------------

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


_RESUME_IGNORED = ("eval_batch_size", "amp", "channels_last", "compile", "data_dir")


def _save_state(path: Path, model: Classifier, opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, step: int,
                history: list[dict], encoding: dict) -> None:
    otensors, ometa = _optim_to_flat(opt)
    tensors = {f"model.{k}": v for k, v in model.net.state_dict().items()} | otensors
    meta = {"format_version": artifacts.CHECKPOINT_FORMAT_VERSION, "kind": "train-state", "config": cfg.to_dict(),
            "epoch": epoch, "step": step, "history": history, "optim": ometa, "encoding": encoding}
    artifacts.save_tensors(path, tensors, meta)


def _load_state(path: Path, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"--resume: no training state at '{path}' (nothing to resume)")
    tensors, meta = artifacts.load_tensors(path)
    if meta.get("kind") != "train-state":
        raise ArtifactError(f"'{path}' is not a training state file")
    old = meta["config"]
    diff = [k for k, v in cfg.to_dict().items() if k not in _RESUME_IGNORED and old.get(k) != v]
    if diff:
        desc = ", ".join(f"{k} ({old.get(k)!r} before, {getattr(cfg, k)!r} now)" for k in diff[:4])
        raise ConfigError(f"--resume: options differ from the interrupted run: {desc}")
    return tensors, meta


# ----------------------------------------------------------------------------------------
#   Evaluation
# ----------------------------------------------------------------------------------------

@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, device: torch.device | None = None,
            amp: bool = True, channels_last: bool = False) -> torch.Tensor:
    """Logits for uint8 images ``x`` (N, C, H, W), batched, on ``device`` (default: the model's)."""
    from .device import model_device

    device = device or model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).float().div_(255)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outs.append(model(xb).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
             batch_size: int = 1000, loss_fn: Callable | None = None, amp: bool = True,
             channels_last: bool = False) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix (rows: true class) and loss on (x, y)."""
    logits = predict(model, x, batch_size, amp=amp, channels_last=channels_last)
    y = y.to(logits.device)
    k = num_classes or logits.shape[1]
    pred = logits.argmax(1)
    conf = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k).cpu()
    support = conf.sum(1)
    per_class = (conf.diag().double() / support.clamp_min(1)).tolist()
    loss = loss_fn(logits, y) if loss_fn is not None else F.cross_entropy(logits, y)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).double().mean()) if len(y) else float("nan"),
        "loss": float(loss),
        "per_class_accuracy": per_class,
        "confusion": conf.tolist(),
    }


def checkpoint_dataset(meta: dict[str, Any], dataset: str | None = None,
                       data_dir: str | None = None) -> tuple[Dataset, str]:
    """The dataset a checkpoint was trained on (same loader options and class subset), or ``dataset``."""
    dmeta, tcfg = meta.get("dataset", {}), meta.get("train_config", {})
    name = dataset or tcfg.get("dataset") or dmeta.get("name")  # train_config keeps a .npz path as given
    if not name:
        raise ConfigError("the checkpoint does not name its dataset; pass --dataset")
    same = dataset is None or dataset in (tcfg.get("dataset"), dmeta.get("name"))
    ds = load_dataset(name, data_dir if data_dir is not None else (tcfg.get("data_dir") if same else None),
                      **(tcfg.get("dataset_options", {}) if same else {}))
    if dmeta.get("class_subset") and same:
        ds = ds.subset_classes(dmeta["class_subset"])
    return ds, name


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | None = None, data_dir: str | None = None,
                        split: str = "test", device: str = "auto", batch_size: int = 1000) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset split
    (default: the dataset it was trained on)."""
    dev = resolve_device(device)
    configure_backends(dev)
    model = artifacts.load_model(checkpoint, dev)
    ds, name = checkpoint_dataset(model.meta, dataset, data_dir)
    if tuple(ds.input_shape) != tuple(model.input_shape):
        raise ConfigError(f"dataset '{name}' has images {tuple(ds.input_shape)} but the model expects "
                          f"{tuple(model.input_shape)}")
    if ds.num_classes != model.num_classes:
        raise ConfigError(f"dataset '{name}' has {ds.num_classes} classes but the model {model.num_classes}")
    x, y = ds.split(split)
    res = evaluate(model, x, y, model.num_classes, batch_size)
    return {"checkpoint": str(checkpoint), "dataset": name, "split": split, "classes": model.classes, **res}


# ----------------------------------------------------------------------------------------
#   Training
# ----------------------------------------------------------------------------------------

def _encoding_for(info_encoding: str, x_train: torch.Tensor) -> dict[str, Any]:
    if info_encoding == "normalize":
        xf = x_train.float().div_(255)
        mean = xf.mean(dim=(0, 2, 3))
        std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return {"kind": "normalize", "mean": [round(v, 6) for v in mean.tolist()],
                "std": [round(v, 6) for v in std.tolist()]}
    return {"kind": info_encoding}


def prepare_data(cfg: TrainConfig) -> tuple[Dataset, np.ndarray, np.ndarray]:
    ds = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
    if cfg.classes:
        ds = ds.subset_classes(list(cfg.classes))
    tr, va = train_val_split(ds.y_train, cfg.val_split, cfg.folds, cfg.fold, cfg.seed)
    return ds, tr, va


def train(cfg: TrainConfig, out: str | os.PathLike | None = None, resume: bool = False, device: str = "auto",
          reporter: Reporter | None = None, threads: int | None = None) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.dataset``; write the checkpoint to ``out`` (if given).

    Returns the final metrics, the per-epoch history and the files written.
    """
    cfg = cfg.resolved()
    reporter = reporter or _Silent()
    if out is not None:
        artifacts.check_output_path(out)
    rank, world, dev = _dist_setup(device)
    try:
        return _train(cfg, Path(out) if out is not None else None, resume, dev, rank, world, reporter, threads)
    finally:
        _dist_teardown(world)


def _train(cfg: TrainConfig, out: Path | None, resume: bool, dev: torch.device, rank: int, world: int,
           reporter: Reporter, threads: int | None) -> TrainResult:
    configure_backends(dev, threads)
    if world > 1 and dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
    writes = out is not None and rank == 0
    state_path = sidecar(out, ".state.safetensors") if out else None
    if resume and out is None:
        raise ConfigError("--resume needs --out (the state is kept beside the checkpoint)")
    if cfg.batch_size % world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")

    # ---- Data ---------------------------------------------------------------------------
    ds, tr_idx, va_idx = prepare_data(cfg)
    x_tr, y_tr = ds.x_train[tr_idx], ds.y_train[tr_idx]
    x_va, y_va = ds.x_train[va_idx], ds.y_train[va_idx]
    info = get_model_info(cfg.arch)
    # channels_last speeds convolutions up on CUDA and on the CPU (oneDNN): ~1.3x for resnet20 here.
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    bs = min(cfg.batch_size, len(y_tr))
    drop_last = world > 1 or len(y_tr) % bs == 1  # BatchNorm cannot train on a batch of one
    loader = DeviceLoader(x_tr, y_tr, bs, dev, shuffle=True, drop_last=drop_last, flip=cfg.flip,
                          translate=cfg.translate, seed=cfg.seed, rank=rank, world=world, channels_last=channels_last)
    if len(loader) == 0:
        raise ConfigError(f"not enough training images ({len(y_tr)}) for one batch of {bs} on {world} processes")

    # ---- Model and optimiser ------------------------------------------------------------
    state_tensors, state_meta = (None, None)
    if resume:
        state_tensors, state_meta = _load_state(state_path, cfg)
    encoding = state_meta["encoding"] if state_meta else _encoding_for(info.encoding, x_tr)
    seed_everything(cfg.seed)
    model = Classifier(cfg.arch, ds.num_classes, ds.input_shape, encoding, ds.classes, cfg.arch_kwargs).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if state_tensors is None and hasattr(model.net, "init_from_data"):
        model.net.init_from_data(model.encoder(x_tr[:5000].to(dev).float() / 255))
    opt = make_optimizer(cfg, model)
    start_epoch, step, history = 0, 0, []
    if state_tensors is not None:
        model.net.load_state_dict({k[6:]: v for k, v in state_tensors.items() if k.startswith("model.")})
        _optim_from_flat(opt, state_tensors, state_meta["optim"])
        start_epoch, step, history = state_meta["epoch"], state_meta["step"], state_meta["history"]
    fwd: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:
        fwd = torch.compile(fwd)
    loss_fn = make_loss(cfg.loss, ds.num_classes, cfg.label_smoothing)
    eval_loss = make_loss(cfg.loss, ds.num_classes, 0.0)
    total_steps = cfg.epochs * len(loader)
    # Modules that change with training progress (temperature annealing) expose train_progress(t), t in [0, 1).
    progress_hooks = [m for m in model.modules() if callable(getattr(m, "train_progress", None))]

    # ---- Kernel snapshots ---------------------------------------------------------------
    snap_layer = first_layer(model.net, info.first_layer)
    snapshots, snap_steps, snap_epochs = [], [], []
    snap_path = sidecar(out, ".kernels.npz") if out else None
    if cfg.snapshot_every and snap_layer is not None:
        if start_epoch and snap_path and snap_path.exists():
            arrays, _ = artifacts.load_npz(snap_path)
            keep = arrays["steps"] <= step
            snapshots = list(torch.from_numpy(arrays["kernels"][keep]))
            snap_steps, snap_epochs = arrays["steps"][keep].tolist(), arrays["epochs"][keep].tolist()
        elif not start_epoch:
            snapshots, snap_steps, snap_epochs = [snap_layer.weight.detach().float().cpu().clone()], [0], [0]

    def write_snapshots() -> None:
        if writes and snapshots:
            artifacts.save_npz(snap_path, {"layer": info.first_layer, "arch": cfg.arch, "every": cfg.snapshot_every},
                               kernels=torch.stack(snapshots).numpy(), steps=np.array(snap_steps),
                               epochs=np.array(snap_epochs))

    # ---- Loop ---------------------------------------------------------------------------
    reporter.start(cfg, len(loader), start_epoch) if rank == 0 else None
    files: list[Path] = []
    for epoch in range(start_epoch, cfg.epochs):
        fwd.train()
        loader.set_epoch(epoch)
        torch.manual_seed(int(epoch_generator(cfg.seed, epoch + 10_000).seed() % (2**62)))  # dropout etc.
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        seen, t0 = 0, time.perf_counter()
        for i, (xb, yb) in enumerate(loader):
            lr = cfg.lr * lr_factor(cfg.schedule, step / total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            for m in progress_hooks:
                m.train_progress(step / total_steps)
            with autocast(dev, cfg.amp):
                logits = fwd(xb)
                loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            if cfg.snapshot_every and snap_layer is not None and step % cfg.snapshot_every == 0:
                snapshots.append(snap_layer.weight.detach().float().cpu().clone())
                snap_steps.append(step)
                snap_epochs.append(epoch)
            if rank == 0 and (dev.type == "cpu" or i % 20 == 0 or i == len(loader) - 1):
                el = time.perf_counter() - t0
                reporter.step(epoch, i + 1, float(loss_sum) / seen, float(correct) / seen, seen * world / max(el, 1e-9))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        tot_loss, tot_correct, tot_seen = _all_reduce([float(loss_sum), float(correct), float(seen)], world, dev)
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "loss": tot_loss / tot_seen, "train_acc": tot_correct / tot_seen,
            "lr": lr, "seconds": seconds, "images_per_s": tot_seen / max(seconds, 1e-9),
        }
        if rank == 0:
            kw = dict(num_classes=ds.num_classes, batch_size=cfg.eval_batch_size, loss_fn=eval_loss, amp=cfg.amp,
                      channels_last=channels_last)
            if len(y_va):
                ev = evaluate(model, x_va, y_va, **kw)
                record.update(val_acc=ev["accuracy"], val_loss=ev["loss"])
            ev = evaluate(model, ds.x_test, ds.y_test, **kw)
            record.update(test_acc=ev["accuracy"], test_loss=ev["loss"])
            history.append(record)
            reporter.epoch(record)
        if writes:
            _save_state(state_path, model, opt, cfg, epoch + 1, step, history, encoding)
            artifacts._write_bytes(sidecar(out, ".log.jsonl"),
                                   "".join(artifacts.dumps(r) + "\n" for r in history).encode())
            write_snapshots()
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
    reporter.finish() if rank == 0 else None

    # ---- Final checkpoint ---------------------------------------------------------------
    last = history[-1] if history else {}
    metrics = {k: last[k] for k in ("loss", "train_acc", "val_acc", "test_acc") if k in last}
    metrics.update(epochs=cfg.epochs, steps=step, train_seconds=sum(r["seconds"] for r in history))
    if writes:
        dataset_meta = ds.describe() | {"data_dir": cfg.data_dir, "n_train_used": int(len(y_tr)),
                                        "n_val": int(len(y_va)), "val_split": cfg.val_split, "folds": cfg.folds,
                                        "fold": cfg.fold, "split_seed": cfg.seed}
        artifacts.save_checkpoint(out, model, dataset=dataset_meta, train_config=cfg.to_dict(), metrics=metrics,
                                  world_size=world, argv=artifacts.command_line())
        files = [out, sidecar(out, ".log.jsonl")] + ([snap_path] if snapshots else [])
        state_path.unlink(missing_ok=True)
    return TrainResult(out if writes else None, metrics, history, files)
