"""``interp train``: train a registered architecture on a registered dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..data import get_dataset_info, list_datasets
from ..ops.train import train
from ..training import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
from ..training.config import TRANSLATE_PADS
from ..training.state import sidecar
from ._app import Interrupted, app
from ._console import Ticker, duration, err, print_json, print_paths, progress_interval
from ._options import ArchChoice, DataDirOpt, DeviceOpt, ForceOpt, JsonOpt, QuietOpt, choice, parse_kv, value

OptimizerChoice = choice("Optimizer", OPTIMIZERS)
ScheduleChoice = choice("Schedule", SCHEDULES)
LossChoice = choice("Loss", LOSSES)
PadChoice = choice("TranslatePad", TRANSLATE_PADS)


class RichReporter:
    """Training progress on stderr and one line per epoch.  On a terminal a live rich bar (loss,
    accuracy, images/s); in logs (stderr a pipe or file: nohup, make, cluster jobs) a plain line
    every ~10 s instead (epoch, step/steps, loss, acc, img/s, ETA of the epoch and of the run).
    ``$INTERP_PROGRESS`` 0: neither, only the per-epoch lines (``interval``: default from it)."""

    def __init__(self, quiet: bool, live: bool | None = None, interval: float | None = None):
        self.quiet = quiet
        if interval is None:
            interval = progress_interval()
            self.steps_shown = interval is not None
        else:
            self.steps_shown = True
        self.live = (err.is_terminal if live is None else live) and self.steps_shown
        self.interval = interval or 0.0
        self.progress: Progress | None = None
        self._epoch, self._t0 = -1, time.monotonic()

    def start(self, cfg: TrainConfig, steps_per_epoch: int, start_epoch: int) -> None:
        self.cfg, self.steps = cfg, steps_per_epoch
        self.ticker = Ticker(self.interval)
        if self.quiet:
            return
        if start_epoch:
            err.print(f"resuming after epoch {start_epoch}")
        if not self.live:
            return
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  {task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(), console=err, transient=True,
        )
        self.progress.start()
        self.task = None

    def step(self, epoch: int, i: int, loss: float, acc: float, ips: float) -> None:
        if self.quiet:
            return
        if self._epoch != epoch:
            self._epoch, self._t0 = epoch, time.monotonic()
            if self.progress is not None:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task("", total=self.steps, epoch=f"{epoch + 1}/{self.cfg.epochs}",
                                                   loss=0.0, acc=0.0, ips=0.0)
        if self.progress is not None:
            self.progress.update(self.task, completed=i, loss=loss, acc=acc, ips=ips)
        elif self.steps_shown and self.ticker.due():
            per_step = (time.monotonic() - self._t0) / max(i, 1)
            left = (self.steps - i) * per_step
            run_left = left + (self.cfg.epochs - epoch - 1) * self.steps * per_step  # evaluation time not counted
            err.print(f"epoch {epoch + 1}/{self.cfg.epochs}  step {i}/{self.steps}  loss {loss:.4f}  acc {acc:.3f}  "
                      f"{ips:.0f} img/s  ETA {duration(left)} (run {duration(run_left)})", markup=False)

    def epoch(self, r: dict[str, Any]) -> None:
        if self.quiet:
            return
        extra = "".join(f"  {k} {r[k]:.4f}" for k in ("val_acc", "test_acc") if k in r)
        line = (f"epoch {r['epoch']}/{self.cfg.epochs}  loss {r['loss']:.4f}  train_acc {r['train_acc']:.4f}{extra}"
                f"  {r['images_per_s']:.0f} img/s  {r['seconds']:.1f}s")
        (self.progress.console if self.progress else err).print(line, markup=False)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@app.command("train", rich_help_panel="Models")
def train_cmd(
    arch: Annotated[ArchChoice, typer.Option("--arch", "-a", help="Architecture (see `interp models`).", rich_help_panel="Model", show_choices=False)],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see `interp datasets`), a .npz file or an image folder.", rich_help_panel="Data", autocompletion=list_datasets)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Checkpoint to write (its folder must exist; an existing one needs --force). Default ARCH-DATASET.safetensors.", rich_help_panel="Output")] = None,
    force: ForceOpt = False,
    data_dir: DataDirOpt = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Train on a subset of classes, comma-separated names or indices (plane,car).", rich_help_panel="Data")] = None,
    dataset_arg: Annotated[Optional[list[str]], typer.Option("--dataset-arg", help="Loader option KEY=VALUE, each dataset its own (pulses n_train=5000, folder image_size=64; docs/datasets.md); repeatable. Short runs on any dataset: --limit-train.", rich_help_panel="Data")] = None,
    limit_train: Annotated[Optional[int], typer.Option("--limit-train", min=1, help="Train on a stratified subset of N training images (drawn with --seed; recorded in the checkpoint).", rich_help_panel="Data")] = None,
    limit_test: Annotated[Optional[int], typer.Option("--limit-test", min=1, help="Test each epoch on a stratified subset of N test images; eval and explain on the checkpoint use the same subset.", rich_help_panel="Data")] = None,
    arch_arg: Annotated[Optional[list[str]], typer.Option("--arch-arg", help="Architecture option KEY=VALUE (width=32, bias=true); repeatable.", rich_help_panel="Model")] = None,
    bias: Annotated[Optional[bool], typer.Option("--bias/--no-bias", help="Additive biases on/off in archs with a `bias` option (the B-cos ablation).", rich_help_panel="Model")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "-e", help="Epochs (default: arch recipe, else 10).", rich_help_panel="Optimisation")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Global batch size (default: recipe, else 128).", rich_help_panel="Optimisation")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: recipe, else 0.05).", rich_help_panel="Optimisation")] = None,
    optimizer: Annotated[Optional[OptimizerChoice], typer.Option("--optimizer", help="sgd (Nesterov), adam or adamw (default: recipe, else sgd).", rich_help_panel="Optimisation")] = None,
    momentum: Annotated[Optional[float], typer.Option("--momentum", help="SGD momentum / Adam beta1 (default: 0.9).", rich_help_panel="Optimisation")] = None,
    schedule: Annotated[Optional[ScheduleChoice], typer.Option("--schedule", help="Learning-rate shape (default: recipe, else cosine).", rich_help_panel="Optimisation")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="On weights with 2+ dims (default: 5e-4).", rich_help_panel="Optimisation")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option("--label-smoothing", help="Label smoothing of the targets (default: recipe, else 0).", rich_help_panel="Optimisation")] = None,
    loss: Annotated[Optional[LossChoice], typer.Option("--loss", help="ce, bce (one-vs-all) or l1 (to one-hot) (default: recipe, else ce).", rich_help_panel="Optimisation")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Random horizontal flips (default: dataset's).", rich_help_panel="Data")] = None,
    translate: Annotated[Optional[int], typer.Option("--translate", help="Random translations up to N px (default: dataset's).", rich_help_panel="Data")] = None,
    translate_pad: Annotated[PadChoice, typer.Option("--translate-pad", help="Padding of translations: zero (random crop with zero padding) or reflect.", rich_help_panel="Data")] = "zero",
    seed: Annotated[int, typer.Option("--seed", help="Seeds init, order, augmentation and splits.")] = 0,
    val_split: Annotated[float, typer.Option("--val-split", help="Hold out this stratified fraction of the training split for validation.", rich_help_panel="Data")] = 0.0,
    folds: Annotated[int, typer.Option("--folds", help="Stratified K-fold cross-validation: K.", rich_help_panel="Data")] = 0,
    fold: Annotated[int, typer.Option("--fold", help="Which fold (0..K-1) is the validation fold.", rich_help_panel="Data")] = 0,
    snapshot_every: Annotated[int, typer.Option("--snapshot-every", help="Store the first layer's kernels every N steps (NAME.kernels.npz).", rich_help_panel="Output")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT's .state.safetensors (OUT itself must not exist yet, unless --force); with a larger --epochs, extend it.")] = False,
    keep_state: Annotated[bool, typer.Option("--keep-state", help="Keep OUT's .state.safetensors after the run finishes, so that `--resume --force --epochs N` can extend it later.", rich_help_panel="Output")] = False,
    device: DeviceOpt = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA.", rich_help_panel="Performance")] = True,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel="Performance")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model and write a safetensors checkpoint with its metadata.

    Beside the checkpoint go NAME.log.jsonl (per-epoch loss, accuracies, learning rate,
    seconds) and, with --snapshot-every, NAME.kernels.npz.  Options left out take the
    architecture's published recipe (`interp models --json`), then generic defaults.
    Runs data-parallel under `torchrun --nproc_per_node=N`.

    Example:

        interp train --arch lenet --dataset digits --epochs 20 --out runs/lenet.safetensors

        interp train -a resnet20 -d cifar10 --data-dir ../shared/data --val-split 0.1 -o runs/r20.safetensors

        interp train -a resnet20 -d cifar10 --data-dir ../shared/data --limit-train 5000 --limit-test 1000 -e 5 -o runs/short.safetensors
    """
    arch, optimizer, schedule, loss = value(arch), value(optimizer), value(schedule), value(loss)
    cfg = TrainConfig(
        arch=arch, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
        dataset_options=parse_kv(dataset_arg, "--dataset-arg"),
        classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        limit_train=limit_train, limit_test=limit_test,
        arch_kwargs=parse_kv(arch_arg, "--arch-arg") | ({} if bias is None else {"bias": bias}), epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, momentum=momentum, schedule=schedule, weight_decay=weight_decay,
        label_smoothing=label_smoothing, loss=loss, seed=seed, val_split=val_split, folds=folds, fold=fold,
        snapshot_every=snapshot_every, flip=flip, translate=translate, translate_pad=value(translate_pad), amp=amp,
        compile=compile,
    )
    cfg.validate()
    if out is None:
        out = Path(f"{arch}-{Path(dataset).stem}.safetensors")
    if flip is None and translate is None and not quiet and get_dataset_info(dataset).name in ("npz", "folder"):
        r = cfg.resolved()
        err.print(f"note: a {get_dataset_info(dataset).name} dataset has no default augmentation: training with flip "
                  f"{r.flip}, translate {r.translate}; choose with --flip/--no-flip and --translate N (a CIFAR-10 "
                  "subset would want --flip --translate 4)", markup=False, soft_wrap=True)
    reporter = RichReporter(quiet)
    try:
        result = train(cfg, out=out, resume=resume, device=device, reporter=reporter, force=force,
                       keep_state=keep_state)
    except KeyboardInterrupt:
        reporter.finish()
        state = sidecar(out, ".state.safetensors")
        raise Interrupted("interrupted; rerun with --resume to continue" if state.exists() else
                          "interrupted before the first epoch finished (nothing to resume)") from None
    if result.checkpoint is None:  # a non-zero rank under torchrun
        return
    if json_out:
        print_json({"checkpoint": str(result.checkpoint), "files": [str(f) for f in result.files],
                    "metrics": result.metrics})
    else:
        print_paths(result.files)
