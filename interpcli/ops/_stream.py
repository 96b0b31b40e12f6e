"""Streaming and scale-out of the commands that explain many images (``explain``, ``occlude``).

    scale = Scale(chunk=256, shard="1/4")
    result, files = stream(source, compute, "out/expl", scale, record=..., key=...)

The images of an :class:`~interpcli.inputs.InputSource` are taken ``chunk`` at a time; each
chunk's result is one part of the output (:mod:`interpcli.attribution_store`), written as soon
as it is computed, so memory holds one chunk whatever the number of images.  The chunks are
dealt out in contiguous runs (:func:`interpcli.dist.shard_range`): to ``--shard I/N`` (a
complete result of its slice, merged later with ``--merge``) or to the ranks of ``torchrun``
(every rank writes its parts into rank 0's staging folder; rank 0 waits for all, then writes
part 0 and the PNGs and renames the folder into place; the other ranks write nothing final).
A chunk is computed the same way whichever process takes it, so the merged result equals a
single process's bit for bit on the same device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import artifacts, dist
from ..attribution_store import PNG_ROWS, finalize, write_part
from ..attributions import Attributions
from ..errors import ConfigError
from ..inputs import Inputs, InputSource

__all__ = ["Scale", "stream", "run_key", "chunk_seed", "Step", "CHUNK"]

CHUNK = 256  # images per chunk: bounds memory (one chunk of images and maps) and makes the parts
Step = Callable[[float, str], None]  # (fraction of the chunk done, label)


@dataclasses.dataclass
class Scale:
    """How a run is cut up: ``chunk`` images at a time (one part of the result each), this
    process's ``shard`` (``"I/N"``; under torchrun every rank takes its own from RANK /
    WORLD_SIZE), and PNGs for the first ``png_rows`` rows only."""

    chunk: int = CHUNK
    shard: str | None = None
    png_rows: int = PNG_ROWS

    def check(self) -> Scale:
        if self.chunk < 1:
            raise ConfigError(f"--chunk must be at least 1 image, got {self.chunk}")
        if self.png_rows < 0:
            raise ConfigError(f"--png-rows must be >= 0, got {self.png_rows}")
        if dist.parse_shard(self.shard) is not None and dist.env_world()[1] > 1:
            raise ConfigError("--shard splits a run by hand; under torchrun every rank takes its shard itself: "
                              "give one or the other")
        return self


def run_key(**what: Any) -> str:
    """A key of everything shards of one run must share (checkpoint, methods, inputs, ...)."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` for draws shaped by the batch (SmoothGrad's noise, ...): ``seed``
    itself for the first chunk (a run of one chunk is what one call gives), else derived from
    both, the same whichever process computes the chunk."""
    if chunk == 0:
        return int(seed)
    return int(hashlib.sha256(f"{int(seed)}:{chunk}".encode()).hexdigest()[:15], 16)


def _chunks(source: InputSource, compute: Callable[[Inputs, int, Step | None], Attributions], mine: range,
            chunk: int, progress: Callable[[int, int, str], None] | None) -> Iterator[tuple[int, int, Attributions]]:
    """(chunk index, its number of images, its result) for the chunks ``mine``."""
    n = len(source)
    total = sum(min(n, (c + 1) * chunk) - c * chunk for c in mine)
    done = 0
    for c in mine:
        a, b = c * chunk, min(n, (c + 1) * chunk)
        step = (lambda f, label, d=done, k=b - a: progress(d + int(f * k), total, label)) if progress else None
        res = compute(source.take(a, b), c, step)
        done += b - a
        if progress is not None:
            progress(done, total, "")
        yield c, b - a, res


def my_chunks(n: int, scale: Scale, what: str) -> tuple[int, int, tuple[int, int] | None, tuple[int, int], range]:
    """(rank, world, the ``--shard`` or None, (slice, slices), this process's chunks) of ``n``
    ``what`` in chunks of ``scale.chunk``: the ``--shard`` slice, else the torchrun rank's; a
    ``--shard`` that gets no chunk is refused."""
    rank, world = dist.env_world()
    shard = dist.parse_shard(scale.shard)
    index, count = shard if shard is not None else (rank, world)
    n_chunks = math.ceil(n / scale.chunk)
    mine = dist.shard_range(n_chunks, index, count)
    if shard is not None and not mine:
        raise ConfigError(f"--shard {index}/{count} gets no {what}: {n} {what} make {n_chunks} chunk(s) of "
                          f"--chunk {scale.chunk}; use at most {n_chunks} shards or a smaller --chunk")
    return rank, world, shard, (index, count), mine


def stream(source: InputSource, compute: Callable[[Inputs, int, Step | None], Attributions],
           out: str | os.PathLike | None, scale: Scale, *, png: bool = True, force: bool = False,
           record: dict[str, Any] | None = None, key: str = "",
           progress: Callable[[int, int, str], None] | None = None) -> tuple[Attributions | None, list[Path]]:
    """Run ``compute(inputs, chunk_index, step)`` on this process's chunks of ``source`` and write
    the parts to ``out`` (see the module doc).  Returns the first chunk's result (with ``out``
    None: this process's whole result, in memory) and the files written (none on ranks > 0).

    ``record``: the parent checkpoint recorded in every part; ``key``: :func:`run_key` of the run,
    recorded in a shard's part 0; ``progress(images done, images, label)``."""
    n, chunk = len(source), scale.chunk
    rank, world, shard, (index, count), mine = my_chunks(n, scale, "images")

    def results() -> Iterator[tuple[int, int, Attributions]]:
        for c, k, res in _chunks(source, compute, mine, chunk, progress):
            res.checkpoint = dict(record or {})
            yield c, k, res

    if out is None:
        parts = [res for _, _, res in results()]
        return (Attributions.concat(parts) if parts else None), []
    if world > 1 and shard is None:
        return _distributed(results(), out, scale, png, force, rank, world, mine)
    meta = {}
    if shard is not None:
        meta["shard"] = {"index": index, "count": count, "images": [mine.start * chunk, min(n, mine.stop * chunk)],
                         "n_images": n, "chunk": chunk, "run": key}
    with artifacts.staged_folder(out, force) as tmp:
        first = None
        for c, k, res in results():
            local = c - mine.start
            if local == 0:
                first = res
            else:
                write_part(tmp, local, res, local * chunk * (len(res) // k))
        files = finalize(tmp, first, png, scale.png_rows, **meta)
    return first, [Path(out) / Path(f).relative_to(tmp) for f in files]


def _distributed(results: Iterator[tuple[int, int, Attributions]], out: str | os.PathLike, scale: Scale, png: bool,
                 force: bool, rank: int, world: int, mine: range) -> tuple[Attributions | None, list[Path]]:
    """Every rank writes its parts (global numbering) into rank 0's staging folder; rank 0 waits
    for them (a barrier), then writes part 0 and the PNGs; the folder is renamed into place when
    rank 0 leaves the staging block."""
    staging = artifacts.staged_folder(out, force) if rank == 0 else contextlib.nullcontext(None)
    with staging as tmp:
        folder = Path(dist.broadcast_object(str(tmp) if tmp is not None else None, world))
        first = None
        for c, k, res in results:
            if c == mine.start:
                first = res
            if c > 0:
                write_part(folder, c, res, c * scale.chunk * (len(res) // k))
        dist.barrier(world)  # every part is on disk
        files = finalize(folder, first, png, scale.png_rows) if rank == 0 else []
    return first, [Path(out) / Path(f).relative_to(folder) for f in files]
