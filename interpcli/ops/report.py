"""``interp report``: a static, self-contained HTML gallery of ``interp`` output folders.

    from interpcli.ops.report import build_report
    summary, files = build_report(["out/e1", "out/scores", "runs/"], "report")

Each folder given (searched down to :data:`MAX_DEPTH` levels for output folders) becomes a
section of ``report/index.html`` by its kind (:mod:`interpcli.reporting.sections`: explain /
occlude, consistency, noise-grad, kernels, sparsify, compare; checkpoints and training logs;
any other pictures), with its provenance (checkpoint path, sha256, the training command).
Pictures are hard-linked (else copied) into ``report/assets/`` and referenced relatively, so the
folder works offline, zipped and mailed.  The folder is written whole (``artifacts.staged_folder``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__, artifacts
from ..errors import ConfigError
from ..reporting.curves import LOG_SUFFIX
from ..reporting.html import Section, page
from ..reporting.provenance import Context, command_text, images_in
from ..reporting.runs import is_run_checkpoint
from ..reporting.sections import BUILDERS, detect, figures_section, runs_section

__all__ = ["build_report", "find_sections", "MAX_DEPTH", "INDEX"]

MAX_DEPTH = 4  # folder levels searched below each folder given
INDEX = "index.html"
Found = tuple[str, Path, list[Path] | None]  # (kind, folder or source file, the run files of a `runs` section)


def _run_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and (
        is_run_checkpoint(p.name) or p.name.endswith(LOG_SUFFIX)))


def _walk(folder: Path, skip: set[str], depth: int, found: list[Found]) -> None:
    if str(folder.resolve()) in skip or (folder / INDEX).is_file() and (folder / "assets").is_dir():
        return  # the report being written, or an earlier report
    kind = detect(folder)
    if kind is not None:
        found.append((kind, folder, None))
        return  # its subfolders (sparsify's features/) are its own
    runs = _run_files(folder)
    if runs:
        found.append(("runs", folder, runs))
    elif images_in(folder, recursive=False):
        found.append(("pictures", folder, None))
    if depth < MAX_DEPTH:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            _walk(sub, skip, depth + 1, found)


def find_sections(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> list[Found]:
    """What each path shows, in order: an output folder (its kind), a folder of runs or pictures,
    and the output folders below it; a checkpoint or ``*.log.jsonl`` file is a runs section, another
    file its folder.  A path that shows nothing is an error."""
    skip = {str(Path(out).resolve())} if out is not None else set()
    found: list[Found] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"not found: {p}")
        before = len(found)
        if p.is_file():
            if p.name.endswith((".safetensors", LOG_SUFFIX)):
                found.append(("runs", p, [p]))
            else:
                _walk(p.parent, skip, MAX_DEPTH, found)
        else:
            _walk(p, skip, 0, found)
        if len(found) == before:
            raise ConfigError(f"nothing to report in '{p}': no interp output folder, checkpoint, training log "
                              "or picture")
    seen, unique = set(), []
    for f in found:
        key = (f[0], str(f[1].resolve()))
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _slug(i: int, path: Path) -> str:
    return f"{i:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', path.name or 'root')[:40]}"


def _section(kind: str, path: Path, runs: list[Path] | None, ctx: Context, slug: str) -> Section:
    if kind == "runs":
        return runs_section(runs or [], str(path), ctx, slug, path if path.is_dir() else None)
    if kind == "pictures":
        return figures_section(path, ctx, slug)
    return BUILDERS[kind](path, ctx, slug)


def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str = "interp report",
                 max_rows: int = 16, force: bool = False,
                 progress: Callable[[int, int, str], None] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Write ``out/index.html`` and ``out/assets/`` for ``paths`` (see the module doc); returns a
    summary (``sections``: kind, source, pictures) and ``[out/index.html]``.  ``max_rows``: rows of
    each explain / occlude image table.  An existing non-empty ``out`` is refused unless ``force``,
    which replaces it as a whole."""
    if max_rows < 1:
        raise ConfigError(f"--max-rows must be at least 1, got {max_rows}")
    artifacts.check_output_folder(out, force)
    found = find_sections(paths, out)
    with artifacts.staged_folder(out, force) as tmp:
        ctx = Context(tmp, max_rows=max_rows, inputs=tuple(Path(p).resolve() for p in paths))
        sections = []
        for i, (kind, path, runs) in enumerate(found, 1):
            if progress:
                progress(i - 1, len(found), str(path))
            before = len(ctx.copied)
            sec = _section(kind, path, runs, ctx, _slug(i, path))
            sec.files = list(ctx.copied.values())[before:]
            sections.append(sec)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        header = [("generated", f"{now} by interp {__version__}"), ("command", command_text(artifacts.command_line())),
                  ("sections", str(len(sections)))]
        artifacts.write_bytes(tmp / INDEX, page(title, sections, header).encode())
    summary = {"index": str(Path(out) / INDEX), "sections": [
        {"kind": s.kind, "source": s.source, "anchor": s.anchor, "files": len(s.files)} for s in sections]}
    return summary, [Path(out) / INDEX]
