"""The explanation result: attribution maps of (image, target) rows, saved and read back exactly.

    result = Attributions.load("out/r20-explain", checkpoint="runs/r20.safetensors")
    result.maps["gradcam"]       # (M, 1, H, W)
    result.predictions           # (M,)
    result.save("out/copy")      # attributions.npz, PNG overlays, grid.png

One row per (image, target) pair.  ``save`` writes ``attributions.npz`` (layout in
docs/artifacts.md) and PNGs into a temporary folder beside the output and renames it into
place at the end, so a failure never leaves a partial folder and a replaced folder (``force``)
never mixes old and new files.  ``load`` reads the NPZ back
(bit for bit) and, given the parent checkpoint, checks its sha256 against the one recorded.

A result written chunk by chunk (:mod:`interpcli.attribution_store`) is split into *parts*:
``attributions.npz`` holds the first rows and, in its ``meta.part``, the number of parts and
rows; ``attributions-00001.npz``, ... hold the next rows, each a complete attributions file of
its rows.  :func:`part_files` lists them; ``load`` reads them all back as one result.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifacts, viz
from .artifacts import check_output_folder, staged_folder
from .errors import ArtifactError

__all__ = ["Attributions", "NPZ_NAME", "check_output_folder", "part_path", "part_files", "total_rows"]

NPZ_NAME = "attributions.npz"
PART_STEM = "attributions-"  # part i >= 1: attributions-00001.npz, ...
_ROW_ARRAYS = ("images", "targets", "labels", "logits", "predictions", "sources", "attributions")


@dataclasses.dataclass
class Attributions:
    """Attribution maps of M (image, target) rows by one or more methods.

    Attributes:
        images: (M, C, H, W) float in [0, 1].
        targets, labels: (M,) int64 (label -1 where unknown).
        logits: (M, classes) of the explained model.
        sources: where each image came from (file, ``dataset:split:index``, ``npz:i``).
        maps: method -> (M, C or 1, H, W) float32.
        params: method -> the parameters used.
        signed: method -> whether values can be negative (diverging colour map).
        classes: the model's class names.
        checkpoint: the parent checkpoint (``path``, ``sha256``, ``arch``), when known.
        extras: other per-row arrays (``bcos_rgba``, ``mask_scores``, ...).
    """

    images: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    sources: list[str]
    maps: dict[str, torch.Tensor]
    params: dict[str, dict[str, Any]]
    signed: dict[str, bool]
    classes: list[str]
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(self.maps)

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)

    def __len__(self) -> int:
        return len(self.targets)

    def meta(self) -> dict[str, Any]:
        return {"kind": "attributions", "methods": self.methods, "params": self.params, "signed": self.signed,
                "classes": self.classes, "checkpoint": self.checkpoint}

    # ------------------------------------------------------------------------------------- save

    def save(self, out_dir: str | os.PathLike, png: bool = True, force: bool = False) -> list[Path]:
        """Write ``attributions.npz``, one PNG per (row, method) and ``grid.png`` (several methods);
        returns the files written, the NPZ first.

        Everything is written into a temporary folder beside ``out_dir``, which is then renamed
        into place: an existing non-empty folder is refused unless ``force``, which replaces it
        as a whole (renamed away, then deleted), never leaving a mix of old and new files."""
        with staged_folder(out_dir, force) as tmp:
            names = [self.write_npz(tmp / NPZ_NAME)] + (self.write_pngs(tmp) if png else [])
        return [Path(out_dir) / f.name for f in names]

    def write_npz(self, path: Path, **meta: Any) -> Path:
        """The NPZ alone (``meta`` adds keys to its meta JSON, e.g. ``part``)."""
        arrays = {f"attr_{m}": a.numpy().astype(np.float32) for m, a in self.maps.items()}
        arrays["attributions"] = arrays[f"attr_{self.methods[0]}"]
        return artifacts.save_npz(path, {**self.meta(), **meta}, images=self.images.numpy().astype(np.float32),
                                  targets=self.targets.numpy(), labels=self.labels.numpy(),
                                  logits=self.logits.numpy(), predictions=self.predictions.numpy(),
                                  sources=np.array(self.sources), **arrays, **self.extras)

    def write_pngs(self, folder: Path) -> list[Path]:
        """Per (row, method) ``NNNN_<method>.png`` (title: source, true label, prediction, target; red
        with ``✗ wrong`` when misclassified) and, for an image file that was resized to the model's
        input, ``NNNN_<method>_original.png`` (the map upsampled onto the file's own pixels);
        ``NNNN_bcos_rgb.png`` (upscaled, nearest); ``grid.png`` with several methods."""
        imgs, names, originals = self.images.numpy(), [], {}
        preds, labels = self.predictions.tolist(), self.labels.tolist()
        name = lambda c: self.classes[c] if 0 <= c < len(self.classes) else str(c)
        rows = [(name(t), name(preds[i]), name(labels[i]) if labels[i] >= 0 else None)
                for i, t in enumerate(self.targets.tolist())]
        for i in range(len(imgs)):
            src = self.sources[i]
            if src not in originals:  # the file's own pixels, when it was resized (checked unchanged)
                originals[src] = viz.source_pixels(src, imgs[i])
            for m in self.methods:
                f = folder / f"{i:04d}_{m}.png"
                title, wrong = viz.row_title(src, *rows[i], method=m)
                attr = self.maps[m][i].numpy()
                artifacts.write_bytes(f, viz.overlay_png(imgs[i], attr, self.signed[m], title, wrong))
                names.append(f)
                if originals[src] is not None:
                    f = folder / f"{i:04d}_{m}_original.png"
                    artifacts.save_png(f, viz.original_overlay(originals[src], attr, self.signed[m]),
                                       {"source": src, "method": m, "title": title})
                    names.append(f)
        for i, rgba in enumerate(self.extras.get("bcos_rgba", [])):
            f = folder / f"{i:04d}_bcos_rgb.png"
            artifacts.save_png(f, viz.upscale((rgba * 255).round().astype(np.uint8)),
                               {"method": "bcos", "rendering": "rgba"})
            names.append(f)
        if len(self.methods) > 1:
            f = folder / "grid.png"
            titles = [viz.row_title(Path(s).name, *r, sep="\n") for s, r in zip(self.sources, rows)]
            artifacts.write_bytes(f, viz.grid_png(imgs, [self.maps[m].numpy() for m in self.methods], self.methods,
                                                  [self.signed[m] for m in self.methods], [t for t, _ in titles],
                                                  [w for _, w in titles]))
            names.append(f)
        return names

    # ------------------------------------------------------------------------------------- load

    @classmethod
    def load(cls, path: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Attributions:
        """Read an ``attributions.npz`` (or the folder holding one) written by :meth:`save`, all
        its parts (a chunked result) concatenated; a part file (``attributions-00003.npz``) given
        by name is read alone.

        With ``checkpoint``, its sha256 must equal the one recorded (else
        :class:`~interpcli.errors.ArtifactError`): maps are only meaningful for their model."""
        sha = artifacts.sha256_file(checkpoint) if checkpoint is not None else None
        parts = [cls.load_file(p, checkpoint, sha) for p in part_files(path)]
        return parts[0] if len(parts) == 1 else cls.concat(parts)

    @classmethod
    def load_file(cls, path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  sha256: str | None = None) -> Attributions:
        """One NPZ file (one part of a chunked result) as it is; ``sha256``: the checkpoint's, if known."""
        p = Path(path)
        arrays, meta = artifacts.load_npz(p)
        if meta.get("kind") != "attributions":
            raise ArtifactError(f"'{p}' is not an attributions file written by interp explain/occlude")
        methods = list(meta.get("methods", []))
        missing = [k for k in ("images", "targets", "labels", "logits", "sources") if k not in arrays]
        missing += [f"attr_{m}" for m in methods if f"attr_{m}" not in arrays]
        if missing or not methods:
            raise ArtifactError(f"'{p}' lacks {', '.join(missing) or 'methods'}; not a complete attributions file")
        if checkpoint is not None:
            recorded = meta.get("checkpoint", {}).get("sha256")
            actual = sha256 or artifacts.sha256_file(checkpoint)
            if recorded is None:
                raise ArtifactError(f"'{p}' records no checkpoint sha256; cannot check it against '{checkpoint}'")
            if recorded != actual:
                raise ArtifactError(f"'{p}' was computed from another checkpoint than '{checkpoint}' "
                                    f"(sha256 {recorded[:12]}... vs {actual[:12]}...)")
        extras = {k: v for k, v in arrays.items() if k not in _ROW_ARRAYS and not k.startswith("attr_")}
        return cls(images=torch.from_numpy(arrays["images"]), targets=torch.from_numpy(arrays["targets"]),
                   labels=torch.from_numpy(arrays["labels"]), logits=torch.from_numpy(arrays["logits"]),
                   sources=[str(s) for s in arrays["sources"]],
                   maps={m: torch.from_numpy(arrays[f"attr_{m}"]) for m in methods},
                   params=meta.get("params", {}), signed={m: bool(meta.get("signed", {}).get(m, True))
                                                          for m in methods},
                   classes=list(meta.get("classes", [])), checkpoint=meta.get("checkpoint", {}), extras=extras)

    @classmethod
    def concat(cls, parts: list[Attributions]) -> Attributions:
        """The rows of ``parts`` (same methods) one after the other.  An extra whose trailing shape
        differs between parts (``mask_scores`` with another mask count) is padded: NaN, False or -1."""
        first = parts[0]
        if any(p.methods != first.methods for p in parts):
            raise ArtifactError("the parts hold different methods; not one result")
        cat = lambda ts: ts[0] if len(ts) == 1 else torch.cat(ts)
        extras = {k: _pad_cat([p.extras[k] for p in parts]) for k in first.extras if all(k in p.extras for p in parts)}
        return cls(cat([p.images for p in parts]), cat([p.targets for p in parts]), cat([p.labels for p in parts]),
                   cat([p.logits for p in parts]), [s for p in parts for s in p.sources],
                   {m: cat([p.maps[m] for p in parts]) for m in first.methods}, first.params, first.signed,
                   first.classes, first.checkpoint, extras)

    def rows(self, start: int, stop: int) -> Attributions:
        """Rows ``start:stop`` as a result of their own."""
        return dataclasses.replace(self, images=self.images[start:stop], targets=self.targets[start:stop],
                                   labels=self.labels[start:stop], logits=self.logits[start:stop],
                                   sources=self.sources[start:stop],
                                   maps={m: a[start:stop] for m, a in self.maps.items()},
                                   extras={k: v[start:stop] for k, v in self.extras.items()})


def _pad_cat(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape[1:] for a in arrays}) <= 1:
        return np.concatenate(arrays)
    shape = tuple(max(s) for s in zip(*(a.shape[1:] for a in arrays)))
    fill = {"b": False, "i": -1, "u": 0}.get(arrays[0].dtype.kind, np.nan)
    out = []
    for a in arrays:
        b = np.full((len(a), *shape), fill, dtype=a.dtype)
        b[(slice(None), *(slice(0, n) for n in a.shape[1:]))] = a
        out.append(b)
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------- parts

def part_path(folder: str | os.PathLike, index: int) -> Path:
    """Part ``index`` of a chunked result in ``folder``: ``attributions.npz`` for 0, else
    ``attributions-00001.npz``, ..."""
    return Path(folder) / (NPZ_NAME if index == 0 else f"{PART_STEM}{index:05d}.npz")


def part_files(path: str | os.PathLike) -> list[Path]:
    """The NPZ files of a result: ``path`` is its folder or its ``attributions.npz`` (every part,
    in order, checked present), or another NPZ file (that file alone)."""
    p = Path(path)
    if p.is_dir():
        p = p / NPZ_NAME
    if p.name != NPZ_NAME or not p.is_file():
        return [p]
    info = artifacts.load_npz_meta(p).get("part") or {}
    files = [part_path(p.parent, i) for i in range(int(info.get("parts", 1)))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ArtifactError(f"'{p}' is part 0 of {len(files)} but {', '.join(missing[:3])}"
                            f"{' ...' if len(missing) > 3 else ''} is missing beside it; the result is incomplete")
    return files


def total_rows(path: str | os.PathLike) -> int:
    """The number of rows of a result (all parts), from the metadata alone."""
    files = part_files(path)
    meta = artifacts.load_npz_meta(files[0])
    if "part" in meta and "rows" in meta["part"]:
        return int(meta["part"]["rows"])
    return len(artifacts.read_npz_arrays(files[0])["targets"])
