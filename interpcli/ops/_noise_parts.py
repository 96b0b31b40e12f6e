"""A streamed ``interp noise-grad`` run: its inputs (columns) a chunk at a time, written in parts.

Layout (docs/noise-grad.md): ``noise_grad.npz`` holds the first columns and, in ``meta.part``, the
number of parts and inputs; ``noise_grad-00001.npz``, ... the next columns (``gradients`` (U, k, C,
H, W), ``inputs``, ``kinds``, ``sources``, ``values``, ``units``, ``unit_names`` each);
``scores.json`` holds the scores of every input (running sums, :class:`~interpcli.alignment.AlignmentSums`)
and ``grid.png`` the first inputs.  A ``--shard I/N`` run adds ``alignment_sums.npz`` (its sums) so
that :func:`merge_columns` can add the shards' sums; under torchrun the ranks add theirs directly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import artifacts, dist
from ..alignment import AlignmentSums
from ..attribution_store import order_shards
from ..errors import ArtifactError, ConfigError
from ..noisegrad import NPZ_NAME, NoiseGrad
from ._stream import Scale, my_chunks

__all__ = ["stream_columns", "merge_columns", "load_columns", "part_path", "SUMS_NAME"]

PART_STEM = "noise_grad-"
SUMS_NAME = "alignment_sums.npz"


def part_path(folder: str | os.PathLike, index: int) -> Path:
    return Path(folder) / (NPZ_NAME if index == 0 else f"{PART_STEM}{index:05d}.npz")


def load_columns(path: str | os.PathLike) -> NoiseGrad:
    """One part (or a whole single-file result) as a :class:`NoiseGrad` of its columns."""
    a, meta = artifacts.load_npz(path)
    if meta.get("kind") != "noise_grad":
        raise ArtifactError(f"'{path}' is not written by interp noise-grad")
    return NoiseGrad(torch.from_numpy(a["gradients"]), torch.from_numpy(a["inputs"]), [str(k) for k in a["kinds"]],
                     [str(s) for s in a["sources"]], [int(u) for u in a["units"]], [str(n) for n in a["unit_names"]],
                     torch.from_numpy(a["values"]), meta["layer"], meta["config"], meta.get("checkpoint", {}))


def _cat(a: NoiseGrad | None, b: NoiseGrad, limit: int) -> NoiseGrad:
    """The first ``limit`` columns of ``a`` followed by ``b``."""
    b = b.columns(0, limit - (len(a.kinds) if a is not None else 0))
    if a is None:
        return b
    return NoiseGrad(torch.cat([a.gradients, b.gradients], 1), torch.cat([a.inputs, b.inputs]), a.kinds + b.kinds,
                     a.sources + b.sources, a.units, a.unit_names, torch.cat([a.values, b.values]), a.layer, a.config,
                     a.checkpoint)


def _finalize(folder: Path, first: NoiseGrad, head: NoiseGrad, sums: AlignmentSums, png: bool,
              **meta: Any) -> list[Path]:
    """Part 0 with the totals once the other parts are checked consecutive, ``scores.json`` and the grid."""
    found = sorted(folder.glob(f"{PART_STEM}*.npz"))
    if found != [part_path(folder, i) for i in range(1, len(found) + 1)]:
        raise ArtifactError(f"'{folder}': the parts of the result do not follow on")
    first.sums = head.sums = sums
    part = {"index": 0, "start": 0, "stop": len(first.kinds), "parts": 1 + len(found), "inputs": first.n_inputs}
    return [first.write_npz(part_path(folder, 0), part=part, **meta), *found,
            *head.write_summary(folder, png and len(head.kinds) > 0)]


def stream_columns(compute: Callable[[int, int, Callable[[int, int], None] | None], NoiseGrad], total: int,
                   n_units: int, center: Sequence[float], shape: Sequence[int], out: str | os.PathLike,
                   scale: Scale, *, png: bool,
                   force: bool, key: str, progress: Callable[[int, int], None] | None,
                   device: torch.device) -> tuple[NoiseGrad, list[Path]]:
    """``compute(a, b, step)`` on this process's chunks of the ``total`` columns, each written as a
    part of ``out`` (see the module doc); returns the first chunk's result (with the sums of all
    columns) and the files written (none on ranks > 0)."""
    chunk = scale.chunk
    rank, world, shard, (index, count), mine = my_chunks(total, scale, "inputs")
    together = world > 1 and shard is None  # torchrun: one folder, global part numbers
    base = 0 if together else mine.start
    todo = sum(min(total, (c + 1) * chunk) - c * chunk for c in mine)
    staging = artifacts.staged_folder(out, force) if rank == 0 or not together else contextlib.nullcontext(None)
    with staging as tmp:
        folder = Path(dist.broadcast_object(str(tmp) if tmp is not None else None, world) if together else tmp)
        first = held = head = None
        sums = AlignmentSums(n_units, center, size=int(np.prod(shape)))
        done = 0
        for c in mine:
            a, b = c * chunk, min(total, (c + 1) * chunk)
            step = (lambda d, _n, base_=done: progress(base_ + d, todo)) if progress else None
            res = compute(a, b, step)
            done += b - a
            sums.add(res.gradients, res.inputs, res.is_noise)
            first = first or res
            if c - base == 0:
                held = res
            else:
                start = a - base * chunk
                res.write_npz(part_path(folder, c - base), mean=False,
                              part={"index": c - base, "start": start, "stop": start + b - a})
            if head is None or len(head.kinds) < scale.png_rows:
                head = _cat(head, res, scale.png_rows)
        if together:  # every rank adds its sums, chunks or none
            sums.sums = dist.all_reduce_tensors(sums.sums, world, device)
            dist.barrier(world)  # every part is on disk
            if rank != 0:
                return first, []
        meta = {}
        if shard is not None:
            meta["shard"] = {"index": index, "count": count, "columns": [mine.start * chunk,
                                                                         min(total, mine.stop * chunk)],
                             "n_columns": total, "chunk": chunk, "run": key}
        files = _finalize(folder, held, head, sums, png, **meta)
        if shard is not None:
            files.append(artifacts.save_npz(folder / SUMS_NAME, {"kind": "alignment-sums", "n_units": n_units,
                                                                 "center": list(center)},
                                            **{k: v.numpy() for k, v in sums.sums.items()}))
    return held, [Path(out) / Path(f).relative_to(folder) for f in files]


def merge_columns(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                  png: bool = True, png_inputs: int = 64) -> list[Path]:
    """The single result of a ``--shard I/N`` noise-grad run from its shards' folders (any order)."""
    pairs = []
    for f in folders:
        if not (Path(f) / NPZ_NAME).is_file():
            raise ConfigError(f"'{f}' is not an interp noise-grad output folder (no {NPZ_NAME})")
        pairs.append((artifacts.load_npz_meta(Path(f) / NPZ_NAME).get("shard"), f))
    infos = order_shards(pairs)
    with artifacts.staged_folder(out, force) as tmp:
        held = head = sums = None
        k = start = 0
        for _, folder in infos:
            arrays, meta = artifacts.load_npz(Path(folder) / SUMS_NAME)
            if sums is None:
                sums = AlignmentSums(int(meta["n_units"]), meta["center"])
            sums.add_sums({name: torch.from_numpy(v) for name, v in arrays.items()})
            parts = int(artifacts.load_npz_meta(Path(folder) / NPZ_NAME)["part"]["parts"])
            for i in range(parts):
                res = load_columns(part_path(folder, i))
                if k == 0:
                    held = res
                else:
                    res.write_npz(part_path(tmp, k), mean=False,
                                  part={"index": k, "start": start, "stop": start + len(res.kinds)})
                if head is None or len(head.kinds) < png_inputs:
                    head = _cat(head, res, png_inputs)
                k, start = k + 1, start + len(res.kinds)
        files = _finalize(tmp, held, head, sums, png)
    return [Path(out) / Path(f).relative_to(tmp) for f in files]
