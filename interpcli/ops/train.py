"""``interp train``: one dense loop that reads top to bottom (the airbench style), CPU or GPU.

    cfg = TrainConfig(arch="resnet20", dataset="cifar10", data_dir="../shared/data", epochs=5)
    result = train(cfg, out="runs/r20.safetensors")

Sections: Data, Model and optimiser, Kernel snapshots, Loop, Final checkpoint; the building
blocks (config, losses and schedules, resume state, torchrun helpers) are in
:mod:`interpcli.training`.  Everything random is seeded: the model by ``seed``, every
epoch's order, augmentation and dropout by ``(seed, epoch)``, so a run is bitwise
reproducible on the CPU and a resumed run continues exactly where the killed one stopped.

Files written beside ``out`` (``runs/r20.safetensors``):
``runs/r20.log.jsonl`` (one JSON object per epoch), ``runs/r20.kernels.npz`` (first-layer
kernels every ``snapshot_every`` steps) and, while training, ``runs/r20.state.safetensors``
(weights, optimiser state and history after the last finished epoch, for ``resume``).
Under ``torchrun`` the run is data-parallel and only rank 0 writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .. import artifacts, freshness
from ..data import Dataset, DeviceLoader, load_dataset, train_val_split
from ..data.loader import epoch_generator
from ..device import autocast, configure_backends, prefers_channels_last, seed_everything
from ..errors import ArtifactError, ConfigError
from ..evaluate import evaluate
from ..models import Classifier, first_layer, get_model_info
from ..training import distributed
from ..training.config import Reporter, Silent, TrainConfig, TrainResult
from ..training.optim import lr_factor, make_loss, make_optimizer
from ..training.state import load_state, restore_state, save_state, sidecar

__all__ = ["train", "prepare_data"]


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
    ds = ds.limit(cfg.limit_train, cfg.limit_test, cfg.seed)  # recorded in ds.info, hence in the checkpoint
    tr, va = train_val_split(ds.y_train, cfg.val_split, cfg.folds, cfg.fold, cfg.seed)
    return ds, tr, va


def train(cfg: TrainConfig, out: str | os.PathLike | None = None, resume: bool = False, device: str = "auto",
          reporter: Reporter | None = None, threads: int | None = None, force: bool = False,
          keep_state: bool = False) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.dataset``; write the checkpoint to ``out`` (if given).

    Before any work, ``out``'s folder must take new files and an existing ``out`` is refused
    unless ``force`` (with ``resume`` too: an interrupted run has no checkpoint yet).  If the
    final checkpoint cannot be written, the training state stays beside it for ``resume``.
    ``keep_state`` keeps the state after a finished run too, so that ``resume`` with a larger
    ``cfg.epochs`` (and ``force``) can extend it later; by default it is deleted.
    Returns the final metrics, the per-epoch history and the files written.
    """
    cfg = cfg.resolved()
    reporter = reporter or Silent()
    if out is not None:
        if resume and not force and Path(out).is_file():
            freshness.refuse(out, f"--resume: '{out}' exists, so its run has finished; pass --force to replace it")
        artifacts.check_output_path(out, force=force)
    rank, world, dev = distributed.setup(device)
    try:
        return _train(cfg, Path(out) if out is not None else None, resume, dev, rank, world, reporter, threads,
                      keep_state)
    finally:
        distributed.teardown(world)


def _train(cfg: TrainConfig, out: Path | None, resume: bool, dev: torch.device, rank: int, world: int,
           reporter: Reporter, threads: int | None, keep_state: bool) -> TrainResult:
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
    channels_last = cfg.channels_last if cfg.channels_last is not None else prefers_channels_last(dev, info.family)
    bs = min(cfg.batch_size, len(y_tr))
    drop_last = world > 1 or len(y_tr) % bs == 1  # BatchNorm cannot train on a batch of one
    loader = DeviceLoader(x_tr, y_tr, bs, dev, shuffle=True, drop_last=drop_last, flip=cfg.flip,
                          translate=cfg.translate, translate_pad=cfg.translate_pad, seed=cfg.seed, rank=rank,
                          world=world, channels_last=channels_last)
    if len(loader) == 0:
        raise ConfigError(f"not enough training images ({len(y_tr)}) for one batch of {bs} on {world} processes")

    # ---- Model and optimiser ------------------------------------------------------------
    state_tensors, state_meta = (None, None)
    if resume:
        state_tensors, state_meta = load_state(state_path, cfg)
    encoding = state_meta["encoding"] if state_meta else _encoding_for(info.encoding, x_tr)
    seed_everything(cfg.seed)
    model = Classifier(cfg.arch, ds.num_classes, ds.input_shape, encoding, ds.classes, cfg.arch_kwargs).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if state_tensors is None and hasattr(model.net, "init_from_data"):
        model.net.init_from_data(model.encoder(x_tr[:5000].to(dev).float() / 255))
    opt = make_optimizer(cfg, model)
    start_epoch, step, history = 0, 0, []
    schedule_change: dict[str, Any] | None = None  # set when a resumed run changes --epochs
    if state_tensors is not None:
        start_epoch, step, history = restore_state(model, opt, state_tensors, state_meta)
        before = state_meta["config"].get("epochs")
        if start_epoch > cfg.epochs:
            raise ConfigError(f"--resume: the run has done {start_epoch} epochs already; --epochs must be at least "
                              f"that, got {cfg.epochs}")
        if before != cfg.epochs:  # the schedule is recomputed for the new total from the current step on
            schedule_change = {"after_epoch": start_epoch, "epochs_before": before, "epochs": cfg.epochs}
    kept = start_epoch  # the epochs done in the state file on disk (0: none written by this run)
    fwd: nn.Module = model
    if world > 1:
        fwd = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
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
        sums = [float(loss_sum), float(correct), float(seen)]
        tot_loss, tot_correct, tot_seen = distributed.all_reduce(sums, world, dev)
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
            if schedule_change is not None and epoch == start_epoch:
                record["schedule_change"] = schedule_change
            history.append(record)
            reporter.epoch(record)
        if writes:
            try:
                save_state(state_path, model, opt, cfg, epoch + 1, step, history, encoding)
                kept = epoch + 1
                artifacts.write_bytes(sidecar(out, ".log.jsonl"),
                                      "".join(artifacts.dumps(r) + "\n" for r in history).encode())
                write_snapshots()
            except OSError as e:
                where = f"; the state after epoch {kept} is in '{state_path}' (--resume continues)" if kept else ""
                raise ArtifactError(f"cannot write the training files beside '{out}' ({e.strerror or e}){where}") \
                    from None
        distributed.barrier(world)
    reporter.finish() if rank == 0 else None

    # ---- Final checkpoint ---------------------------------------------------------------
    last = history[-1] if history else {}
    metrics = {k: last[k] for k in ("loss", "train_acc", "val_acc", "test_acc") if k in last}
    metrics.update(epochs=cfg.epochs, steps=step, train_seconds=sum(r["seconds"] for r in history))
    if writes:
        dataset_meta = ds.describe() | {"data_dir": cfg.data_dir, "n_train_used": int(len(y_tr)),
                                        "n_val": int(len(y_va)), "val_split": cfg.val_split, "folds": cfg.folds,
                                        "fold": cfg.fold, "split_seed": cfg.seed}
        try:
            changes = [r["schedule_change"] for r in history if "schedule_change" in r]
            artifacts.save_checkpoint(out, model, dataset=dataset_meta, train_config=cfg.to_dict(), metrics=metrics,
                                      world_size=world, argv=artifacts.command_line(),
                                      **({"schedule_changes": changes} if changes else {}))
        except OSError as e:
            raise ArtifactError(f"cannot write the checkpoint '{out}' ({e.strerror or e}); the trained state is kept "
                                f"in '{state_path}': run the same command with --resume to write it") from None
        files = [out, sidecar(out, ".log.jsonl")] + ([snap_path] if snapshots else [])
        if keep_state:
            files.append(state_path)
        else:
            state_path.unlink(missing_ok=True)
    return TrainResult(out if writes else None, metrics, history, files)
