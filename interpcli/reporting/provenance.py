"""What every section of ``interp report`` needs: the report's assets (pictures copied or
hard-linked beside the page), the provenance of a checkpoint, peeks into NPZ and JSON files,
and the gallery of pictures no section claimed.

    ctx = Context(Path(tmp))
    src = ctx.asset(Path("out/e1/grid.png"), "s01")        # "assets/s01/grid.png", the file copied
    ctx.checkpoint({"path": "runs/r.safetensors", "sha256": "..."})   # provenance pairs
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..errors import InterpError
from ..metadata import loads_strict, read_metadata
from .html import Html, esc, figure, gallery, link, note, url

__all__ = ["Context", "IMAGE_SUFFIXES", "DATA_SUFFIXES", "images_in", "npz_peek", "read_json", "command_text"]

IMAGE_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg", ".webp", ".svg")
DATA_SUFFIXES = (".json", ".csv")  # small data files linked from the page (copied beside it)
MAX_DATA_BYTES = 5 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def images_in(folder: Path, recursive: bool = True) -> list[Path]:
    """The pictures under ``folder`` (sorted; hidden files and folders left out)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_json(path: Path) -> Any:
    """A JSON file's content; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def npz_peek(path: Path, keys: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """(meta, the arrays ``keys`` that exist, every array name) of an NPZ, reading only those
    members (never unpickling); empty when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            meta = loads_strict(str(z["meta"])) if "meta" in names else {}
            return (meta if isinstance(meta, dict) else {}), {k: z[k] for k in keys if k in names}, names
    except Exception:  # a corrupt or foreign file: the section says what it could not read
        return {}, {}, []


def command_text(argv: Any) -> str | None:
    """A recorded command line (a list of words or a string) as one line; None if there is none."""
    if isinstance(argv, (list, tuple)) and argv:
        return " ".join(str(a) for a in argv)
    return argv if isinstance(argv, str) and argv else None


@dataclasses.dataclass
class Context:
    """The report being written: its staging ``root``, ``max_rows`` per image table, the files
    copied so far (source -> URL) and the checkpoints hashed so far."""

    root: Path
    max_rows: int = 16
    inputs: tuple[Path, ...] | None = None  # what the user gave `interp report` (None: anything may be read)
    copied: dict[str, str] = dataclasses.field(default_factory=dict)
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)

    def asset(self, src: Path, slug: str, rel: str | None = None) -> str:
        """Put ``src`` at ``assets/<slug>/<rel>`` (hard link, else copy; once per file) and return
        its URL relative to the page."""
        key = str(src.resolve())
        if key in self.copied:
            return self.copied[key]
        parts = [_SAFE.sub("_", p) for p in Path(rel or src.name).parts]
        dest = self.root / "assets" / slug / Path(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
            with contextlib.suppress(OSError):
                os.chmod(dest, artifacts.file_mode())
        self.copied[key] = url(dest.relative_to(self.root).as_posix())
        return self.copied[key]

    def write(self, data: bytes, slug: str, name: str) -> str:
        """Write new bytes (a figure made by the report) as ``assets/<slug>/<name>``; its URL."""
        dest = self.root / "assets" / slug / _SAFE.sub("_", name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_bytes(dest, data)
        self.copied[str(dest)] = url(dest.relative_to(self.root).as_posix())
        return self.copied[str(dest)]

    def given(self, path: Path) -> bool:
        """Whether ``path`` is one of the report's inputs or inside one of them."""
        if self.inputs is None:
            return True
        p = path.resolve()
        return any(p == r or r in p.parents for r in self.inputs)

    def sha256(self, path: Path) -> str:
        key = str(path.resolve())
        if key not in self.hashes:
            self.hashes[key] = artifacts.sha256_file(path)
        return self.hashes[key]

    def figures(self, paths: Iterable[Path], folder: Path, slug: str, captions: Mapping[str, str] | None = None,
                wide: bool = False) -> Html:
        """A gallery of pictures under ``folder`` (captioned with their path in it, or ``captions``)."""
        figs = []
        for p in paths:
            rel = p.relative_to(folder).as_posix()
            figs.append(figure(self.asset(p, slug, rel), (captions or {}).get(p.name, rel), rel))
        return gallery(figs, wide)

    def others(self, folder: Path, claimed: set[Path], slug: str, recursive: bool = True, limit: int = 60) -> Html:
        """The pictures of ``folder`` no section part showed (``claimed``), at most ``limit``."""
        rest = [p for p in images_in(folder, recursive) if p.resolve() not in claimed]
        if not rest:
            return Html("")
        more = note(f"{len(rest) - limit} more pictures in {folder} are not shown") if len(rest) > limit else ""
        return Html(f"<h3>{'Other pictures' if claimed else 'Pictures'}</h3>"
                    f"{self.figures(rest[:limit], folder, slug)}{esc(more)}")

    def data_links(self, folder: Path, slug: str, names: Sequence[str] | None = None) -> Html:
        """Links to the folder's small data files (JSON, CSV; copied beside the page)."""
        files = [folder / n for n in names] if names is not None else sorted(folder.iterdir())
        files = [f for f in files if f.is_file() and f.suffix.lower() in DATA_SUFFIXES
                 and f.stat().st_size <= MAX_DATA_BYTES]
        if not files:
            return Html("")
        return Html('<p class="note">Data: ' + ", ".join(link(self.asset(f, slug), f.name) for f in files) + "</p>")

    def checkpoint(self, record: Any, label: str = "checkpoint") -> list[tuple[str, Any]]:
        """Provenance of the checkpoint an artifact recorded (``path``, ``sha256``, ``arch``): those,
        and, when the file is still at that path, whether its sha256 still matches, the command
        that trained it and when."""
        if isinstance(record, str):
            record = {"path": record}
        if not isinstance(record, Mapping) or not record.get("path"):
            return []
        path = Path(str(record["path"]))
        out: list[tuple[str, Any]] = [(label, str(path)), ("sha256", record.get("sha256")),
                                      ("arch", record.get("arch"))]
        if not self.given(path):
            return out + [("note", "not among the report's inputs, so not opened (a path recorded in an artifact is "
                                   "read only when it, or a folder holding it, is given to interp report)")]
        if not path.is_file():
            return out + [("note", "the checkpoint is not at this path from here; its training command is unknown")]
        now = self.sha256(path)
        if record.get("sha256") and record["sha256"] != now:
            out.append(("warning", f"the file at this path has changed since (sha256 now {now})"))
        elif not record.get("sha256"):
            out[1] = ("sha256", now)
        try:
            meta = read_metadata(path)
        except InterpError:
            return out
        extra = [("trained by", command_text(meta.get("argv"))), ("created", meta.get("created"))]
        return out + ([("arch", meta.get("arch"))] if not record.get("arch") else []) + extra
