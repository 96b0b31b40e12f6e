"""Chunked explanation results on disk: written part by part, read row range by row range, merged.

    write_part(tmp, 3, part, start=768)                 # attributions-00003.npz
    files = finalize(tmp, first, png=True, png_rows=64) # attributions.npz (part 0, with the totals), PNGs
    reader = RowReader("out/expl", checkpoint="runs/r20.safetensors")
    window = reader.rows(0, 256)                        # an Attributions of rows 0..255, read from its parts
    files = merge_results(["out/s0", "out/s1"], "out/all")   # shards of one run -> the single result

The layout (docs/artifacts.md): part 0 is ``attributions.npz`` and its ``meta.part`` holds
``parts`` and ``rows``, the totals; part i >= 1 is ``attributions-0000i.npz``; every part is a
complete attributions file of its rows (``meta.part``: ``index``, ``start``, ``stop``).  Part 0 is
written last, once every other part is on disk, so a folder with an ``attributions.npz`` is
complete.  PNGs are drawn for the first ``png_rows`` rows only.

A ``--shard I/N`` run writes a complete result of its slice whose part 0 also records
``meta.shard`` (``index``, ``count``, ``images`` [start, stop) of the run's images,
``n_images``, ``chunk`` and ``run``, a key of everything that must agree between shards);
:func:`merge_results` checks the shards belong together and cover every image once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import artifacts
from .attributions import NPZ_NAME, PART_STEM, Attributions, part_files, part_path
from .errors import ArtifactError, ConfigError

__all__ = ["write_part", "finalize", "RowReader", "merge_results", "order_shards", "shard_info", "PNG_ROWS"]

PNG_ROWS = 64  # PNGs (per row and grid.png) of the first rows only: a grid of 10,000 rows is not for reading


def write_part(folder: Path, index: int, res: Attributions, start: int) -> Path:
    """Part ``index`` >= 1 of a result: rows ``start:start + len(res)``."""
    return res.write_npz(part_path(folder, index), part={"index": index, "start": start, "stop": start + len(res)})


def _following_parts(folder: Path, first_rows: int) -> list[Path]:
    """The parts after part 0 in ``folder``, checked consecutive (no part or row missing)."""
    found = sorted(folder.glob(f"{PART_STEM}*.npz"))
    expected = [part_path(folder, i) for i in range(1, len(found) + 1)]
    if found != expected:
        gap = next(e.name for e in expected if e not in found)
        raise ArtifactError(f"'{folder}': part {gap} is missing; the parts do not follow on")
    start = first_rows
    for i, f in enumerate(found, 1):
        info = artifacts.load_npz_meta(f).get("part") or {}
        if info.get("index") != i or info.get("start") != start:
            raise ArtifactError(f"'{f}' holds rows from {info.get('start')}, expected {start}; not one result")
        start = int(info["stop"])
    return found


def finalize(folder: Path, first: Attributions, png: bool = True, png_rows: int = PNG_ROWS,
             **meta: Any) -> list[Path]:
    """Write part 0 (``first``: the first rows) with the totals, after checking that the parts
    already in ``folder`` follow on; then the PNGs of the first ``png_rows`` rows.  ``meta``: more
    keys of part 0's meta (``shard``).  Returns the files written (part 0 first)."""
    rest = _following_parts(folder, len(first))
    rows = int(artifacts.load_npz_meta(rest[-1])["part"]["stop"]) if rest else len(first)
    part = {"index": 0, "start": 0, "stop": len(first), "parts": 1 + len(rest), "rows": rows}
    files = [first.write_npz(part_path(folder, 0), part=part, **meta), *rest]
    if png and png_rows > 0:
        head = [first.rows(0, png_rows)]
        for f in rest:
            have = sum(len(h) for h in head)
            if have >= png_rows:
                break
            head.append(Attributions.load_file(f).rows(0, png_rows - have))
        files += (head[0] if len(head) == 1 else Attributions.concat(head)).write_pngs(folder)
    return files


class RowReader:
    """Rows of a result (one file or parts; see :func:`~interpcli.attributions.part_files`) read on
    demand, one part at a time in memory.  With ``checkpoint`` every part's sha256 is checked."""

    def __init__(self, path: str | os.PathLike, checkpoint: str | os.PathLike | None = None):
        self.path, self.checkpoint = Path(path), checkpoint
        self.sha = artifacts.sha256_file(checkpoint) if checkpoint is not None else None
        self.files = part_files(path)
        self._cache: tuple[int, Attributions] | None = None
        self.meta = artifacts.load_npz_meta(self.files[0])
        info = self.meta.get("part") or {}
        if len(self.files) > 1:
            stops = [int(info["stop"])] + [int(artifacts.load_npz_meta(f)["part"]["stop"]) for f in self.files[1:]]
            self.bounds = [0, *stops]
        else:
            self.bounds = [0, len(self.part(0))]

    def __len__(self) -> int:
        return self.bounds[-1]

    @property
    def methods(self) -> list[str]:
        return list(self.meta.get("methods", []))

    def part(self, i: int) -> Attributions:
        if self._cache is None or self._cache[0] != i:
            self._cache = (i, Attributions.load_file(self.files[i], self.checkpoint, self.sha))
        return self._cache[1]

    def parts(self) -> Iterator[Attributions]:
        for i in range(len(self.files)):
            yield self.part(i)

    def rows(self, start: int, stop: int) -> Attributions:
        """Rows ``start:stop`` (clipped to the result)."""
        stop = min(stop, len(self))
        got = []
        for i in range(len(self.files)):
            a, b = self.bounds[i], self.bounds[i + 1]
            if b > start and a < stop:
                got.append(self.part(i).rows(max(start, a) - a, min(stop, b) - a))
        if not got:
            raise ArtifactError(f"'{self.path}' has no rows {start}:{stop} (it has {len(self)})")
        return got[0] if len(got) == 1 else Attributions.concat(got)


def shard_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``meta.shard`` of a result folder (None: not a shard)."""
    files = part_files(folder)
    return artifacts.load_npz_meta(files[0]).get("shard")


def order_shards(infos: Sequence[tuple[dict[str, Any] | None, str | os.PathLike]]) -> list[tuple[dict, Any]]:
    """(``meta.shard``, folder) of every shard folder given, checked to be the N shards of one run
    (same ``run`` key and N, each index once), in shard order."""
    if not infos:
        raise ConfigError("--merge needs the output folders of the shards")
    for info, f in infos:
        if info is None:
            raise ConfigError(f"'{f}' is not the output of a --shard I/N run; nothing to merge")
    infos = sorted(infos, key=lambda t: t[0]["index"])
    count, run = infos[0][0]["count"], infos[0][0]["run"]
    for info, f in infos:
        if info["run"] != run or info["count"] != count:
            raise ConfigError(f"'{f}' is a shard of another run than '{infos[0][1]}' (other checkpoint, methods, "
                              "parameters, inputs, target or --chunk); merge shards of one run")
    have = [info["index"] for info, _ in infos]
    if have != list(range(count)):
        missing = sorted(set(range(count)) - set(have))
        twice = sorted({i for i in have if have.count(i) > 1})
        raise ConfigError(f"shards of {count}: " + (f"missing {', '.join(f'{i}/{count}' for i in missing)}"
                                                    if missing else f"{', '.join(map(str, twice))} given twice"))
    return infos


def merge_results(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                  png: bool = True, png_rows: int = PNG_ROWS) -> list[Path]:
    """The single result of a run from the folders of its ``--shard I/N`` slices (any order):
    checked to be the N shards of one run (same ``run`` key), each once, covering every image;
    the parts are renumbered into ``out``, written as a whole.  Returns the files written."""
    for f in folders:
        if not (Path(f) / NPZ_NAME).is_file():
            raise ConfigError(f"'{f}' is not an explain/occlude output folder (no {NPZ_NAME})")
    infos = order_shards([(shard_info(f), f) for f in folders])
    with artifacts.staged_folder(out, force) as tmp:
        first, k, start = None, 0, 0
        for _, folder in infos:
            for f in part_files(folder):
                res = Attributions.load_file(f)
                if first is None:
                    first = res
                else:
                    write_part(tmp, k, res, start)
                k, start = k + 1, start + len(res)
        files = finalize(tmp, first, png, png_rows)
    return [Path(out) / Path(f).relative_to(tmp) for f in files]
