"""Make-friendly outputs: a command whose output is complete and was made by the same request from
the same input files does nothing the second time (``up to date: OUT (use --force to redo)``, exit 0).

The ``interp`` entry point runs each command under :func:`recording`: the *request* (the command,
its resolved arguments less ``--force``, ``-q``, ``--json`` and ``--resume``, ``$INTERP_DEVICE``,
``$INTERP_DATA_DIR`` and the interp version) and every file the command *reads* (an audit hook
on ``open``, so the files a checkpoint or a default names count too: the dataset, the images,
the NPZs, the checkpoint itself) and every folder it *lists*.  The output records them as it is
written: an output folder in a hidden ``.interp-manifest`` file (JSON, with the size and mtime
of every file of the folder, so a deleted or edited file shows), a checkpoint under the
``request`` key of its metadata, a PNG in a ``interp-request`` tEXt chunk.

Before any work, the output checks of :mod:`interpcli.artifacts` (``check_output_folder``,
``check_output_path``) ask :func:`why_not_fresh` about an existing output: it is up to date when
its record holds the same request, every input file still has the size and mtime it had when it
was read (a folder listed: the same names), the output is newer than every input and, for a
folder, every file of the folder is as written.  Anything else (or no record: written from
Python, or by an older interp) is refused as before, with the reason.  Reads of the output
itself, of its temporary files, of files the run wrote, of Python's and the packages' own files,
of system and cache folders are not inputs.  Without :func:`recording` (the Python API) nothing
changes.  No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import ArtifactError, ConfigError
from .metadata import dumps, read_metadata

__all__ = ["UpToDate", "MANIFEST", "PNG_KEY", "recording", "active", "claim", "why_not_fresh", "refuse", "record_for",
           "stamp_png", "png_text"]

MANIFEST = ".interp-manifest"  # no .json suffix: reports and globs of data files leave it alone
PNG_KEY = "interp-request"
ENV_KEYS = ("INTERP_DEVICE", "INTERP_DATA_DIR")  # they change what a command reads or computes
DIR_FILES = 32  # more files read from one folder than this: recorded as that folder's file table
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so")  # not .pth: weights files (site-packages is skipped by prefix)


class UpToDate(Exception):
    """The output is complete and up to date: nothing to do (exit 0, one line on stderr)."""

    exit_code = 0

    def __init__(self, out: str | os.PathLike):
        super().__init__(f"up to date: {out} (use --force to redo)")
        self.out = out


class _Recorder:
    """The files one command run reads, lists and writes, and its request (computed on first use)."""

    def __init__(self, describe: Callable[[], dict[str, Any]]):
        self.describe = describe
        self.reads: dict[str, tuple[int, int]] = {}
        self.listed: set[str] = set()
        self.writes: set[str] = set()
        self.outputs: set[str] = set()
        self._request: dict[str, Any] | None = None
        self.skip = _skipped_prefixes()

    def request(self) -> dict[str, Any]:
        if self._request is None:
            req = {"args": self.describe(), "env": {k: os.environ.get(k) for k in ENV_KEYS},
                   "interp_version": __version__}
            self._request = json.loads(dumps(req))  # tuples -> lists, paths -> str: as it reads back
        return self._request

    def event(self, name: str, args: tuple) -> None:
        if name == "open":
            path, _, flags = args
            p = _path(path)
            if p is None or self._ignored(p):
                return
            if (flags or 0) & os.O_ACCMODE != os.O_RDONLY:
                self.writes.add(p)
            elif p not in self.reads and p not in self.writes:
                with contextlib.suppress(OSError):
                    st = os.stat(p)
                    if not os.path.isdir(p):
                        self.reads[p] = (st.st_size, st.st_mtime_ns)
        elif name in ("os.listdir", "os.scandir"):
            p = _path(args[0] if args and args[0] is not None else ".")
            if p is not None and not self._ignored(p) and not _import_folder(p):
                self.listed.add(p)
        elif name == "os.rename":
            p = _path(args[1])
            if p is not None:
                self.writes.add(p)

    def _ignored(self, p: str) -> bool:
        if p.endswith(_CODE_SUFFIXES) or "__pycache__" in p:
            return True
        return any(p == s or p.startswith(s + os.sep) for s in self.skip) or self._ours(p)

    def _ours(self, p: str) -> bool:
        """An output, anything in it, or one of its temporary files or folders (``.NAME.<random>``)."""
        for out in self.outputs:
            parent, name = os.path.split(out)
            if p == out or p.startswith((out + os.sep, os.path.join(parent, f".{name}."))):
                return True
            if os.path.dirname(p) == parent and os.path.basename(p).startswith(".interp-probe-"):
                return True
        return False


_hook_installed = [False]
_active: list[_Recorder] = []


def _hook(name: str, args: tuple) -> None:
    if _active and name in ("open", "os.listdir", "os.scandir", "os.rename"):
        try:
            _active[-1].event(name, args)
        except Exception:  # an audit hook that raises would fail the open() it watches
            pass


def _path(p: Any) -> str | None:
    if isinstance(p, int) or p is None:
        return None
    try:
        return os.path.abspath(os.fsdecode(p))
    except (TypeError, ValueError):
        return None


def _import_folder(p: str) -> bool:
    """A folder Python's import system lists (an entry of ``sys.path``, a package), not an input."""
    return p in {os.path.abspath(e or ".") for e in sys.path if isinstance(e, str)} or \
        os.path.exists(os.path.join(p, "__init__.py"))


def _skipped_prefixes() -> list[str]:
    """Python's and the packages' files, system folders and caches: never inputs."""
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(Path(__file__).parent),
             "/proc", "/sys", "/dev", "/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/run", cache,
             os.path.join(home, ".config"), os.environ.get("INTERP_CACHE_DIR", ""), os.environ.get("MPLCONFIGDIR", "")}
    return sorted(os.path.abspath(s) for s in found if s)


@contextlib.contextmanager
def recording(describe: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """Record the request (``describe()``: the command and its resolved arguments, called when an
    output is first checked) and the files read, for the outputs checked and written meanwhile."""
    if not _hook_installed[0]:
        sys.addaudithook(_hook)  # for the life of the process: a hook cannot be removed
        _hook_installed[0] = True
    _active.append(_Recorder(describe))
    try:
        yield
    finally:
        _active.pop()


def active() -> bool:
    return bool(_active)


def claim(out: str | os.PathLike) -> None:
    """``out`` is an output of this run: its reads are not inputs, its writes carry the record."""
    if _active:
        _active[-1].outputs.add(os.path.abspath(out))


# ---------------------------------------------------------------------------------------------- the record

def _names(folder: str, rec: _Recorder) -> str:
    """A digest of a folder's entries, without this run's outputs and temporary files."""
    try:
        names = sorted(n for n in os.listdir(folder) if not rec._ours(os.path.join(folder, n)))
    except OSError:
        return "missing"
    return hashlib.sha256("\0".join(names).encode()).hexdigest()[:32]


def _table(folder: str) -> str:
    """A digest of the names, sizes and mtimes of the files directly in ``folder``."""
    h = hashlib.sha256()
    try:
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                if e.is_file():
                    st = e.stat()
                    h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return "missing"
    return h.hexdigest()[:32]


def _inputs(rec: _Recorder) -> dict[str, list]:
    """The inputs of the run so far: files read (not written by it) with the (size, mtime_ns) they
    had when read, folders listed with a digest of their names; many files of one folder as
    that folder's file table."""
    files = {p: s for p, s in list(rec.reads.items())
             if p not in rec.writes and not rec._ours(p) and os.path.exists(p)}
    by_dir: dict[str, list[str]] = {}
    for p in files:
        by_dir.setdefault(os.path.dirname(p), []).append(p)
    out: dict[str, list] = {}
    for d, ps in by_dir.items():
        if len(ps) > DIR_FILES:
            out[d + os.sep] = ["files", _table(d), max(files[p][1] for p in ps)]
        else:
            out.update({p: ["file", *files[p]] for p in ps})
    for d in sorted(list(rec.listed)):
        if not rec._ours(d) and os.path.isdir(d):
            out.setdefault(d + os.sep + "*", ["names", _names(d, rec), 0])
    return out


def record_for(out: str | os.PathLike, files: dict[str, tuple[int, int]] | None = None) -> dict[str, Any] | None:
    """What the output ``out`` records (None when no request is recorded or ``out`` is not one of
    this run's outputs): the request, the inputs and, for a folder, its ``files`` (relative path ->
    size, mtime_ns)."""
    if not _active or os.path.abspath(out) not in _active[-1].outputs:
        return None
    rec = _active[-1]
    record = {"request": rec.request(), "inputs": _inputs(rec)}
    if files is not None:
        record["files"] = {k: list(v) for k, v in files.items()}
    return record


def _stored(out: Path) -> dict | None:
    """The record an existing output carries (None: none, or unreadable)."""
    try:
        if out.is_dir():
            r = json.loads((out / MANIFEST).read_text())
        elif out.suffix == ".safetensors":
            r = read_metadata(out).get("request")
        elif out.suffix.lower() == ".png":
            raw = png_text(out.read_bytes()).get(PNG_KEY)
            r = json.loads(raw) if raw is not None else None
        else:
            return None
    except (OSError, ValueError, ArtifactError):
        return None
    return r if isinstance(r, dict) else None


def _changed(rec: _Recorder, stored: dict, out: Path) -> str | None:
    """Why the stored record does not hold any more (None: it does)."""
    if stored.get("request") != rec.request():
        old, new = stored.get("request") or {}, rec.request()
        keys = sorted(k for k in {*(old.get("args") or {}), *new["args"]}
                      if (old.get("args") or {}).get(k) != new["args"].get(k))
        if keys:
            return "made with other arguments: " + ", ".join(("--" + k.replace("_", "-")) for k in keys)
        return "made by another interp version or environment"
    newest = 0
    for p, (kind, *v) in (stored.get("inputs") or {}).items():
        if kind == "file":
            try:
                st = os.stat(p)
            except OSError:
                return f"its input '{p}' is gone"
            if [st.st_size, st.st_mtime_ns] != v:
                return f"its input '{p}' changed"
            newest = max(newest, st.st_mtime_ns)
        elif kind == "files":
            if _table(p.rstrip(os.sep)) != v[0]:
                return f"files in its input folder '{p}' changed"
            newest = max(newest, v[1])
        elif kind == "names" and _names(p[:-2], rec) != v[0]:
            return f"the files in '{p[:-2]}' changed"
    carrier = out / MANIFEST if out.is_dir() else out
    if carrier.stat().st_mtime_ns < newest:
        return "an input is newer than it"
    for rel, v in (stored.get("files") or {}).items():
        try:
            st = (out / rel).stat()
        except OSError:
            return f"'{rel}' is missing from it"
        if [st.st_size, st.st_mtime_ns] != v:
            return f"'{rel}' changed since it was written"
    return None


def why_not_fresh(out: str | os.PathLike) -> str | None:
    """Why the existing output ``out`` is not up to date ("" when nothing was recorded, or outside
    :func:`recording`); None when it is up to date (the caller raises :class:`UpToDate`)."""
    if not _active:
        return ""
    stored = _stored(Path(out))
    if stored is None:
        return ""
    return _changed(_active[-1], stored, Path(out))


def refuse(out: str | os.PathLike, message: str) -> NoReturn:
    """An existing output without --force: :class:`UpToDate` when it is up to date, else a
    :class:`~interpcli.errors.ConfigError` with ``message`` and why it is not."""
    claim(out)
    why = why_not_fresh(out)
    if why is None:
        raise UpToDate(out)
    raise ConfigError(message + (f"; not up to date: {why}" if why else ""))


# ---------------------------------------------------------------------------------------------- PNG text

def _chunks(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    pos = len(_PNG_SIG)
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        yield pos, kind, data[pos + 8 : pos + 8 + n]
        pos += 12 + n


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (empty when ``data`` is not a whole PNG)."""
    if not data.startswith(_PNG_SIG) or not any(k == b"IEND" for _, k, _ in _chunks(data)):
        return {}
    out = {}
    for _, kind, body in _chunks(data):
        if kind == b"tEXt" and b"\0" in body:
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


def stamp_png(path: str | os.PathLike, data: bytes) -> bytes:
    """``data`` (a PNG) with this run's record in a tEXt chunk after IHDR, when ``path`` is one of
    its outputs; else ``data`` as it is."""
    record = record_for(path) if data.startswith(_PNG_SIG) else None
    if record is None:
        return data
    body = PNG_KEY.encode() + b"\0" + json.dumps(record, ensure_ascii=True).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = len(_PNG_SIG) + 12 + struct.unpack(">I", data[8:12])[0]  # after IHDR
    return data[:end] + chunk + data[end:]
