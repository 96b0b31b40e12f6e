"""``interp kernels``: a convolution layer's kernels, how they formed during training, the
feature map of one kernel on an image, and the run's loss profile.

    from interpcli.kernels import KernelsConfig
    from interpcli.ops.kernels import kernels_checkpoint
    summary, files = kernels_checkpoint("runs/lenet.safetensors", "out/k", KernelsConfig(),
                                        snapshots="runs/lenet.kernels.npz", loss_log="runs/lenet.log.jsonl")

The building blocks work on loaded models and arrays: :func:`~interpcli.kernels.layer_kernels`,
:func:`~interpcli.kernel_viz.kernel_montage`, :func:`~interpcli.kernels.load_snapshots` and
:func:`~interpcli.kernels.snapshot_frames`, :func:`~interpcli.kernels.feature_map`,
:func:`~interpcli.kernels.read_loss_log` and :func:`~interpcli.kernels.stuck_run`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..attributions import check_output_folder
from ..errors import ConfigError, InterpError
from ..inputs import InputSpec
from ..kernel_viz import (
    feature_map_png,
    ffmpeg_exe,
    gif_bytes,
    kernel_limit,
    kernel_montage,
    kernel_tiles,
    mp4_bytes,
    png_bytes,
    strip,
    write_folder,
)
from ..kernels import (
    KernelsConfig,
    feature_map,
    layer_kernels,
    load_snapshots,
    loss_profile_png,
    pick_frames,
    read_loss_log,
    snapshot_frames,
    stuck_run,
)
from ..metadata import read_metadata
from ..noisegrad import parse_selection
from ._common import checkpoint_record, open_checkpoint

__all__ = ["kernels_checkpoint", "MP4_NOTICE"]

MP4_NOTICE = "no MP4: no video encoder found (pip install imageio-ffmpeg, or put ffmpeg on PATH); the GIF is written"

Writers = dict[str, Callable[[Path], Any]]  # file name -> writes that file at the path it is given


def _bytes(data: bytes) -> Callable[[Path], Any]:
    return lambda p: artifacts.write_bytes(p, data)


def _text(meta: dict[str, Any]) -> dict[str, str]:
    return {"interp": artifacts.dumps(meta)}


def _montage(model, checkpoint, cfg: KernelsConfig, image: InputSpec | None, files: Writers) -> dict[str, Any]:
    w, folded, name = layer_kernels(model, cfg.layer)
    what = f"--kernels (layer '{name}' has {len(w)} kernels)"
    idx = parse_selection(cfg.kernels, len(w), what) if cfg.kernels is not None else list(range(len(w)))
    used, m = kernel_limit(w[idx], cfg.scale)
    limits = f"scale ±{m:.3g}" if used == "symmetric" else f"positive scale 0..{m:.3g}"
    title = (f"{model.arch} {name}: {len(idx)} of {len(w)} kernels {'x'.join(map(str, w.shape[1:]))}"
             f"{' (B-cos, folded to RGB)' if folded else ''}, {limits}")
    meta = {"kind": "kernels", "layer": name, "folded": folded, "scale": used, "limit": m, "kernels": idx,
            "checkpoint": checkpoint_record(checkpoint, model)}
    grid = kernel_montage(w, idx, used, m, cfg.columns, title)
    files["kernels.png"] = _bytes(grid.png(_text(meta)))
    files["kernels.npz"] = lambda p: artifacts.save_npz(p, meta, kernels=w[idx], indices=np.array(idx))
    summary: dict[str, Any] = {"montage": {k: meta[k] for k in ("layer", "folded", "scale", "limit")}
                               | {"shape": list(w.shape)}}
    if image is not None:
        inputs = image.load(model)
        x, src = inputs.images[0], inputs.sources[0]
        fm = feature_map(model, x, cfg.kernel, name)
        if not 0 <= cfg.kernel < len(w):
            raise ConfigError(f"--kernel {cfg.kernel} out of range: layer '{name}' has kernels 0..{len(w) - 1}")
        tile = kernel_tiles(w[[cfg.kernel]], used, m, w.shape[1] == 3)[0][0] if w.shape[1] in (1, 3) \
            else kernel_montage(w, [cfg.kernel], used, m).image
        fmeta = {"kind": "feature_map", "layer": name, "kernel": cfg.kernel, "source": src,
                 "checkpoint": meta["checkpoint"]}
        files["feature_map.png"] = _bytes(feature_map_png(x.numpy(), tile, fm.map.numpy(),
                                                          f"{name} kernel {cfg.kernel} on {src}"))
        files["feature_map.npz"] = lambda p: artifacts.save_npz(p, fmeta, image=x, input=fm.input, weight=fm.weight,
                                                                 feature_map=fm.map)
        summary["feature_map"] = {"kernel": cfg.kernel, "source": src, "shape": list(fm.map.shape)}
    return summary


def _snapshots(path, cfg: KernelsConfig, files: Writers, notices: list[str]) -> dict[str, Any]:
    snaps = load_snapshots(path)
    n_k = snaps.kernels.shape[1]
    idx = parse_selection(cfg.kernels, n_k, f"--kernels (the snapshots have {n_k} kernels)") \
        if cfg.kernels is not None else None
    frames = snapshot_frames(snaps, idx, cfg.scale, cfg.columns, f"{snaps.meta.get('layer', 'kernels')}  ")
    picked = pick_frames(len(frames), cfg.strip)
    files["snapshots.gif"] = _bytes(gif_bytes(frames, cfg.frame_ms))
    files["snapshots_strip.png"] = _bytes(png_bytes(strip([frames[i] for i in picked]),
                                                    _text({"kind": "snapshots", "frames": picked})))
    exe = ffmpeg_exe()
    if exe is not None:
        files["snapshots.mp4"] = _bytes(mp4_bytes(frames, 1000 / cfg.frame_ms, exe))
    else:
        notices.append(MP4_NOTICE)
    return {"frames": len(frames), "steps": snaps.steps.tolist(), "strip": picked, "layer": snaps.meta.get("layer"),
            "folded": snaps.folded}


def _num_classes(model, loss_log: Path) -> int | None:
    """The class count of ``model``, else of the checkpoint beside ``RUN.log.jsonl`` (``RUN.safetensors``)."""
    if model is not None:
        return int(model.num_classes)
    if not loss_log.name.endswith(".log.jsonl"):
        return None
    sibling = loss_log.with_name(loss_log.name[: -len(".log.jsonl")] + ".safetensors")
    try:
        return int(read_metadata(sibling)["num_classes"]) if sibling.is_file() else None
    except (InterpError, KeyError, TypeError, ValueError):
        return None


def kernels_checkpoint(checkpoint: str | os.PathLike | None, out: str | os.PathLike | None, cfg: KernelsConfig, *,
                       snapshots: str | os.PathLike | None = None, image: InputSpec | None = None,
                       loss_log: str | os.PathLike | None = None, device: str = "auto",
                       force: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Kernel pictures written to the folder ``out`` (nothing when None); returns a summary
    (with ``notices`` for people) and the files written.

    - ``checkpoint``: ``kernels.png`` (the montage of ``cfg.layer``, default the arch's first
      layer) and ``kernels.npz`` (the kernels shown, as drawn: B-cos folded);
    - ``snapshots`` (``RUN.kernels.npz``): ``snapshots.gif`` (one frame per snapshot),
      ``snapshots.mp4`` when a video encoder is installed, ``snapshots_strip.png``;
    - ``image`` (one image; needs ``checkpoint``): ``feature_map.png`` and ``feature_map.npz``
      of kernel ``cfg.kernel``;
    - ``loss_log`` (``RUN.log.jsonl``): ``loss_profile.png`` and ``loss_profile.json`` (the
      stuck-run verdict; the class count from ``checkpoint`` or the checkpoint beside the log).

    An existing non-empty ``out`` is refused before any work unless ``force``, which replaces
    it as a whole."""
    cfg.check()
    if image is not None and checkpoint is None:
        raise ConfigError("--image / --index need the checkpoint (its kernel and input size)")
    if checkpoint is None and snapshots is None and loss_log is None:
        raise ConfigError("nothing to draw: give a checkpoint, --snapshots or --loss-log")
    if out is not None:
        check_output_folder(out, force)
    files: Writers = {}
    summary: dict[str, Any] = {"notices": []}
    model = open_checkpoint(checkpoint, device) if checkpoint is not None else None
    if model is not None:
        summary.update(_montage(model, checkpoint, cfg, image, files))
    if snapshots is not None:
        summary["snapshots"] = _snapshots(snapshots, cfg, files, summary["notices"])
    if loss_log is not None:
        history = read_loss_log(loss_log)
        verdict = stuck_run(history, _num_classes(model, Path(loss_log)))
        files["loss_profile.png"] = _bytes(loss_profile_png(history, verdict, str(loss_log)))
        files["loss_profile.json"] = lambda p: artifacts.save_json(p, {"log": str(loss_log), "epochs": len(history),
                                                                       **verdict})
        summary["loss_profile"] = verdict
    if out is None:
        return summary, []

    def write(tmp: Path) -> list[Path]:
        for name, writer in files.items():
            writer(tmp / name)
        return [tmp / name for name in files]

    return summary, write_folder(out, write, force)
