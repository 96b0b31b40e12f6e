"""How kernels look and how they form (the kernel-visualisation study, ../shared/seeds/003):
a convolution layer's kernels, their snapshots through training, the feature map of one
kernel on an image, and the loss profile of a run with a check for a run that got stuck.

    w, folded = layer_kernels(model, "conv1")         # (O, I, kh, kw) numpy; B-cos folded to RGB
    snaps = load_snapshots("runs/r.kernels.npz")      # written by `interp train --snapshot-every`
    fm = feature_map(model, image, kernel=3)          # FeatureMap: layer input, kernel, map
    verdict = stuck_run(read_loss_log("runs/r.log.jsonl"), num_classes=10)

Kernels are the weights the forward pass uses: a B-cos convolution's unit-norm kernels, a
positive convolution's weight >= 0 (its parametrisation applied), a Gumbel convolution's
noiseless kernel.  A B-cos first layer reads the six-channel encoding [x, 1 - x]; its kernel
(w_a, w_b) responds to pixels x with (w_a - w_b) . x + sum(w_b), so it is shown as the RGB
kernel w_a - w_b ("folded").  Pictures: :mod:`interpcli.kernel_viz`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import artifacts
from .device import model_device
from .errors import ConfigError, InterpError
from .kernel_viz import SCALES, kernel_limit, kernel_montage
from .models import first_layer, get_model_info, resolve_layer
from .viz import fig_png, pyplot

__all__ = ["KernelsConfig", "Snapshots", "FeatureMap", "layer_kernels", "kernel_weight", "fold_bcos",
           "load_snapshots", "snapshot_frames", "pick_frames", "feature_map", "read_loss_log", "stuck_run",
           "loss_profile_png", "pad_frames"]


@dataclasses.dataclass
class KernelsConfig:
    """What ``interp kernels`` draws.

    Attributes:
        layer: the convolution (a module path of ``model.net``); None: the arch's first layer.
        kernels: selection of kernels (``0:16``, ``3,5``); None: all.
        scale: ``auto``, ``symmetric`` or ``positive`` (one scale per picture or animation).
        columns: tiles per row for RGB / single-channel kernels (default: a near-square grid).
        kernel: the kernel of the feature map.
        frame_ms: GIF frame duration; strip: frames in the PNG strip.
    """

    layer: str | None = None
    kernels: str | None = None
    scale: str = "auto"
    columns: int | None = None
    kernel: int = 0
    frame_ms: int = 250
    strip: int = 6

    def check(self) -> KernelsConfig:
        if self.scale not in SCALES:
            raise ConfigError(f"--scale must be {', '.join(SCALES)}; got '{self.scale}'")
        for name, v, lo in (("--columns", self.columns, 1), ("--kernel", self.kernel, 0),
                            ("--frame-ms", self.frame_ms, 1), ("--strip", self.strip, 1)):
            if v is not None and v < lo:
                raise ConfigError(f"{name} must be >= {lo}, got {v}")
        return self


# ---------------------------------------------------------------------------------------------- kernels

def kernel_weight(module: nn.Module, name: str = "") -> torch.Tensor:
    """The (O, I, kh, kw) kernels the module's forward pass uses (see the module doc)."""
    w = module.normed_weight() if callable(getattr(module, "normed_weight", None)) else getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        what = f"a weight of shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else "no weight"
        raise ConfigError(f"layer '{name}' ({type(module).__name__}) is not a convolution: it has {what}; "
                          "see `interp noise-grad CKPT --layers` for the layers")
    return w.detach().float()


def fold_bcos(w: np.ndarray | torch.Tensor) -> np.ndarray:
    """(O, 2C, kh, kw) kernels on [x, 1 - x] -> (O, C, kh, kw): w[:, :C] - w[:, C:]."""
    w = np.asarray(w)
    c = w.shape[1] // 2
    return w[:, :c] - w[:, c:]


def _first_layer_name(model: nn.Module) -> str:
    info = getattr(model, "info", None)
    if info is not None and info.first_layer:
        return info.first_layer
    net = getattr(model, "net", model)
    module = first_layer(net)
    return next((n for n, m in net.named_modules() if m is module), "")


def _reads_bcos_encoding(model: nn.Module, name: str, w: torch.Tensor) -> bool:
    enc = getattr(model, "encoder", None)
    spec = enc.spec() if callable(getattr(enc, "spec", None)) else {}
    return spec.get("kind") == "bcos6" and name == _first_layer_name(model) and w.shape[1] % 2 == 0


def layer_kernels(model: nn.Module, layer: str | None = None) -> tuple[np.ndarray, bool, str]:
    """(kernels (O, I, kh, kw) float32, whether they were folded from B-cos' six channels, layer
    name) of ``layer`` (default: the arch's first layer)."""
    name = layer or _first_layer_name(model)
    if not name:
        raise ConfigError("the model names no first layer; pass --layer")
    w = kernel_weight(resolve_layer(getattr(model, "net", model), name), name)
    if _reads_bcos_encoding(model, name, w):
        return fold_bcos(w.cpu().numpy()), True, name
    return w.cpu().numpy(), False, name


# ---------------------------------------------------------------------------------------------- snapshots

@dataclasses.dataclass
class Snapshots:
    """Kernels through training: ``kernels`` (T, O, I, kh, kw), the optimiser ``steps`` and the
    0-based ``epochs`` they were taken in (T,), the file's meta; ``folded`` as in :func:`layer_kernels`."""

    kernels: np.ndarray
    steps: np.ndarray
    epochs: np.ndarray
    meta: dict[str, Any]
    folded: bool = False

    def __len__(self) -> int:
        return len(self.steps)

    def stamp(self, i: int) -> str:
        """``step 0 (init)`` or ``step S · epoch E`` (E 1-based, the epoch in progress, as train logs it)."""
        s = int(self.steps[i])
        return "step 0 (init)" if s == 0 else f"step {s} · epoch {int(self.epochs[i]) + 1}"


def load_snapshots(path: str | os.PathLike) -> Snapshots:
    """Read ``RUN.kernels.npz`` (``interp train --snapshot-every N``).  B-cos kernels are
    normalised to unit norm (as their forward pass does) and folded to RGB."""
    try:
        arrays, meta = artifacts.load_npz(path)
    except InterpError as e:
        raise ConfigError(f"--snapshots: {e}") from None
    missing = [k for k in ("kernels", "steps", "epochs") if k not in arrays]
    if missing:
        raise ConfigError(f"--snapshots '{path}' has no {', '.join(missing)} array: not written by "
                          "`interp train --snapshot-every`")
    k, steps, epochs = arrays["kernels"], arrays["steps"], arrays["epochs"]
    if k.ndim != 5 or len(k) != len(steps) or len(steps) != len(epochs) or not len(k):
        raise ConfigError(f"--snapshots '{path}': kernels {k.shape}, steps {steps.shape}, epochs {epochs.shape} do "
                          "not fit (T, out, in, kh, kw), (T,), (T,)")
    k = k.astype(np.float32)
    folded = False
    try:
        info = get_model_info(str(meta.get("arch", "")))
    except InterpError:
        info = None
    if info is not None and info.family == "bcos":
        k = k / np.maximum(np.sqrt((k.reshape(*k.shape[:2], -1) ** 2).sum(-1)), 1e-12)[..., None, None, None]
        if info.encoding == "bcos6" and meta.get("layer") == info.first_layer and k.shape[2] % 2 == 0:
            k, folded = np.stack([fold_bcos(f) for f in k]), True
    return Snapshots(k, steps.astype(np.int64), epochs.astype(np.int64), meta, folded)


def pick_frames(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over 0..n-1, the first and the last included."""
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(k, n))})


def pad_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frames padded with white (right, bottom) to the largest height and width."""
    h, w = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    out = []
    for f in frames:
        p = np.full((h, w, 3), 255, np.uint8)
        p[: f.shape[0], : f.shape[1]] = f
        out.append(p)
    return out


def snapshot_frames(snaps: Snapshots, indices: Sequence[int] | None = None, scale: str = "auto",
                    columns: int | None = None, title: str = "") -> list[np.ndarray]:
    """One montage per snapshot, all on one scale (the largest magnitude over every frame) and
    of one size, each stamped with its step and epoch."""
    sel = snaps.kernels if indices is None else snaps.kernels[:, list(indices)]
    used, m = kernel_limit(sel, scale)
    frames = [kernel_montage(f, indices, used, m, columns, f"{title}{snaps.stamp(i)}").image
              for i, f in enumerate(snaps.kernels)]
    return pad_frames(frames)


# ---------------------------------------------------------------------------------------------- feature map

@dataclasses.dataclass
class FeatureMap:
    """Kernel ``kernel`` of ``layer`` on one image: the layer's ``input`` (I, H, W) (the encoded
    image for a first layer), the ``weight`` (I, kh, kw) and the ``map`` (h, w) =
    conv2d(input, weight) with the layer's stride, padding and dilation (no bias, no nonlinearity)."""

    input: torch.Tensor
    weight: torch.Tensor
    map: torch.Tensor
    layer: str
    kernel: int


def feature_map(model: nn.Module, image: torch.Tensor, kernel: int = 0, layer: str | None = None) -> FeatureMap:
    """The feature map of one kernel on ``image`` (C, H, W) in [0, 1] (see :class:`FeatureMap`)."""
    name = layer or _first_layer_name(model)
    module = resolve_layer(getattr(model, "net", model), name)
    w = kernel_weight(module, name)
    if not 0 <= kernel < len(w):
        raise ConfigError(f"--kernel {kernel} out of range: layer '{name}' has kernels 0..{len(w) - 1}")
    groups = int(getattr(module, "groups", 1))
    if groups != 1:
        raise ConfigError(f"layer '{name}' is a grouped convolution ({groups} groups); choose another --layer")
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("in", inputs[0].detach()))
    try:
        with torch.no_grad():
            model(image[None].to(model_device(model)))
    finally:
        handle.remove()
    if "in" not in seen:
        raise ConfigError(f"layer '{name}' is not reached in the forward pass")
    x, k = seen["in"].float(), w[kernel : kernel + 1].to(seen["in"].device)
    fmap = F.conv2d(x, k, None, getattr(module, "stride", 1), getattr(module, "padding", 0),
                    getattr(module, "dilation", 1))
    return FeatureMap(x[0].cpu(), k[0].cpu(), fmap[0, 0].cpu(), name, kernel)


# ---------------------------------------------------------------------------------------------- loss profile

def read_loss_log(path: str | os.PathLike, what: str = "--loss-log") -> list[dict[str, Any]]:
    """The per-epoch records of ``RUN.log.jsonl`` (``interp train``): one JSON object per line,
    each with at least ``epoch`` and ``loss``; errors name the file as ``what`` (the option)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what}: cannot read '{path}': {getattr(e, 'strerror', None) or e}") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{what} '{path}' line {i} is not JSON (not a log of `interp train`)") from None
        if not isinstance(row, dict) or "epoch" not in row or "loss" not in row:
            raise ConfigError(f"{what} '{path}' line {i} has no 'epoch' and 'loss'")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{what} '{path}' is empty")
    return rows


def stuck_run(history: Sequence[dict], num_classes: int | None = None, window: int | None = None,
              flat_tol: float = 0.01, margin: float = 0.05) -> dict[str, Any]:
    """Whether a run got stuck: over the last ``window`` epochs (default max(3, a quarter of
    them)) the loss stays within ``flat_tol`` (relative) of its mean while the training accuracy
    is at chance (mean <= 1/num_classes + ``margin``).  ``stuck`` is None when it cannot be told
    (fewer than 3 epochs, no class count, no ``train_acc``); ``since_epoch`` is the first epoch
    of the flat stretch at chance that ends the run."""
    n = len(history)
    chance = 1 / num_classes if num_classes else None
    out: dict[str, Any] = {"stuck": None, "chance": chance, "since_epoch": None, "reason": ""}
    if n < 3 or chance is None or any("train_acc" not in r for r in history):
        out["reason"] = ("fewer than 3 epochs" if n < 3 else "number of classes unknown (give the checkpoint)"
                         if chance is None else "the log has no train_acc")
        return out
    w = min(n, window or max(3, math.ceil(n / 4)))
    loss = np.array([float(r["loss"]) for r in history])
    acc = np.array([float(r["train_acc"]) for r in history])
    tail = loss[-w:]
    spread = float((tail.max() - tail.min()) / max(abs(float(tail.mean())), 1e-12))
    out.update(window=w, loss_spread=spread, train_acc=float(acc[-w:].mean()))
    if spread > flat_tol or out["train_acc"] > chance + margin:
        out.update(stuck=False, reason=f"loss moves {spread:.1%} over the last {w} epochs" if spread > flat_tol
                   else f"training accuracy {out['train_acc']:.3f} is above chance ({chance:.3f})")
        return out
    i = n - 1
    band = flat_tol * max(abs(float(tail.mean())), 1e-12)
    while i > 0 and abs(loss[i - 1] - tail.mean()) <= band and acc[i - 1] <= chance + margin:
        i -= 1
    since = int(history[i]["epoch"])
    out.update(stuck=True, since_epoch=since,
               reason=f"loss flat at {tail.mean():.4g} (±{spread / 2:.1%}) while training accuracy "
                      f"{out['train_acc']:.3f} is at chance (1/{num_classes}) since epoch {since}")
    return out


def loss_profile_png(history: Sequence[dict], verdict: dict, title: str = "") -> bytes:
    """Loss, training accuracy and test accuracy against epoch, three stacked panels sharing
    the epoch axis (validation curves dashed when the log has them); a stuck run
    (:func:`stuck_run`) is flagged in red with its stretch shaded."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), dpi=100, sharex=True)
    ep = [r["epoch"] for r in history]
    panels = [("loss", "loss", ["test_loss", "val_loss"]), ("train_acc", "training accuracy", []),
              ("test_acc", "test accuracy", ["val_acc"])]
    for ax, (key, name, extra) in zip(axes, panels):
        ax.plot(ep, [r.get(key, np.nan) for r in history], marker="o", ms=3, lw=1.5, label=key)
        for other in extra:
            if any(other in r for r in history):
                ax.plot(ep, [r.get(other, np.nan) for r in history], ls="--", lw=1, label=other)
        if key != "loss" and verdict.get("chance") is not None:
            ax.axhline(verdict["chance"], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        if verdict.get("stuck"):
            ax.axvspan(verdict["since_epoch"] - 0.5, ep[-1] + 0.5, color="tab:red", alpha=0.12)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    if verdict.get("stuck"):
        fig.suptitle(f"{title + chr(10) if title else ''}STUCK: {verdict['reason']}", color="tab:red", fontsize=10)
    elif title:
        fig.suptitle(title, fontsize=10)
    return fig_png(plt, fig, pad=0.1)
