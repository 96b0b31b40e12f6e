"""The one place for artifact I/O: checkpoints (safetensors + metadata), NPZ, JSON, PNG.

Every write is atomic: the bytes go to a temporary file in the destination folder,
are fsync'ed, and the file is renamed over the destination, so a killed process never
leaves a half-written artifact (the previous version, if any, stays intact).

A checkpoint is one ``.safetensors`` file.  Its header metadata (``Dict[str, str]``)
holds a single key, ``interp``, whose value is a JSON object describing everything
needed to rebuild and use the model (see ``docs/artifacts.md``).  Nothing is pickled.
Reading that header and the JSON encoding live in :mod:`interpcli.metadata` (no torch, so
``interp info`` starts fast); they are re-exported here.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from . import __version__, freshness, interrupts
from .errors import ArtifactError, ConfigError
from .metadata import (
    CHECKPOINT_FORMAT_VERSION,
    META_KEY,
    dumps,
    existing_file,
    loads_strict,
    meta_dumps,
    meta_from_header,
    parse_header,
    parse_meta,
    read_metadata,
)
from .models import Classifier

__all__ = ["CHECKPOINT_FORMAT_VERSION", "atomic_write", "write_bytes", "check_output_path", "check_folder",
           "check_output_folder", "staged_folder",
           "file_mode", "folder_mode", "read_npz_arrays", "save_checkpoint", "load_checkpoint", "load_model",
           "read_metadata", "save_tensors", "load_tensors", "save_json", "save_npz", "load_npz", "load_npz_meta",
           "save_png", "sha256_file"]


# ----------------------------------------------------------------------------------------
#   Atomic writes
# ----------------------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)  # the only way to read it: set it and put it back at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file under the current umask (0o644 with umask 022), as ``open`` would give."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode of a new folder under the current umask (0o755 with umask 022), as ``mkdir`` would give."""
    return 0o777 & ~_umask()


def check_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """The folder ``folder`` must exist, be a folder and take new files: a temporary file is
    created there and removed (``os.access`` says yes to root on read-only places)."""
    d = Path(folder) if str(folder) else Path(".")
    if not d.is_dir():
        up = next((a for a in [d, *d.parents] if a.exists()), None)
        if up is not None and not up.is_dir():
            where = "" if up == d else f" cannot be created: '{up}'"
            raise ConfigError(f"{what} '{d}'{where} is a file, not a folder")
        raise ConfigError(f"{what} '{d}' does not exist; create it first")
    try:
        with interrupts.deferred():  # never a probe file left behind
            fd, probe = tempfile.mkstemp(prefix=".interp-probe-", dir=d)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} '{d}' is not writable: cannot create a file there ({e.strerror})") from None
    return d


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output file path before any work is done: its folder must exist and take new
    files; an existing file is replaced only with ``force`` (or left alone when up to date)."""
    p = Path(path)
    freshness.claim(p)
    if p.is_dir():
        raise ConfigError(f"output path '{p}' is a directory; give a file name")
    check_folder(p.parent)
    if p.exists() and not force:
        freshness.refuse(p, f"'{p}' exists; pass --force to replace it (or choose another --out)")
    return p


def check_output_folder(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output folder before any work is done: its parent must exist and take new
    files, and an existing non-empty folder is only replaced with ``force``."""
    out = Path(out_dir)
    freshness.claim(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder '{out}' is a file, not a folder")
    check_folder(out.parent, "output folder's parent")
    if not force and out.is_dir() and any(out.iterdir()):
        freshness.refuse(out, f"output folder '{out}' exists and is not empty; pass --force to replace it "
                         "(or choose another --out)")
    return out


def _move_folder(new: Path, out: Path) -> None:
    """Rename folder ``new`` to ``out`` (absent or empty), or, when ``out`` holds files, rename
    ``out`` away first and delete it after: at every moment ``out`` is all old or all new."""
    if not (out.is_dir() and any(out.iterdir())):
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old)  # onto the empty temporary folder
    try:
        os.rename(new, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Write an output folder as a whole: yields a temporary folder beside ``out_dir`` to fill;
    on success it is renamed into place (an existing non-empty folder only with ``force``, then
    replaced as a whole, never merged), on any error or interruption removed, leaving ``out_dir``
    untouched.  Under ``interp`` the folder gets its record (:data:`~interpcli.freshness.MANIFEST`)."""
    out = check_output_folder(out_dir, force)
    tmp: Path | None = None
    try:
        with interrupts.deferred():  # a signal between mkdtemp and the assignment would leave it behind
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        os.chmod(tmp, folder_mode())  # mkdtemp makes 0700: give what mkdir would
        yield tmp
        files = {str(p.relative_to(tmp)): (p.stat().st_size, p.stat().st_mtime_ns)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        record = freshness.record_for(out, files)
        if record is not None:
            save_json(tmp / freshness.MANIFEST, record)
        with interrupts.deferred():  # old folder away and new one in: both or neither
            _move_folder(tmp, out)
    except OSError as e:
        raise ArtifactError(f"cannot write output folder '{out}': {e.strerror or e}") from None
    finally:
        if tmp is not None:
            with interrupts.deferred():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    tmp = None
    try:
        with interrupts.deferred():  # a signal cannot come between creating it and taking note of it
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
            f = os.fdopen(fd, mode)
        with f:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600: give what open() would, under the umask
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename is None:  # a failed write or fsync: say of which file
            raise OSError(e.errno, e.strerror, str(p)) from None
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (an output PNG of ``interp`` gets its record, :mod:`.freshness`)."""
    with atomic_write(path, "wb") as f:
        f.write(freshness.stamp_png(path, data))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    write_bytes(path, (dumps(obj, indent=2) + "\n").encode())
    return Path(path)


def save_npz(path: str | os.PathLike, meta: dict | None = None, **arrays: Any) -> Path:
    """Write a compressed NPZ; ``meta`` is stored as a JSON string under the key ``meta``."""
    buf = io.BytesIO()
    out = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in arrays.items()}
    if meta is not None:
        out["meta"] = np.array(meta_dumps(meta))
    np.savez_compressed(buf, **out)
    write_bytes(path, buf.getvalue())
    return Path(path)


def read_npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an NPZ, never unpickling: anything else (random bytes, a pickled object
    array, a single .npy) is an :class:`~interpcli.errors.ArtifactError` that does not suggest
    loading it unsafely."""
    not_npz = ArtifactError(f"'{path}' is not an NPZ written by numpy without objects")
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"file not found: {path}") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ArtifactError(f"cannot read '{path}': {e.strerror}") from None
    except Exception:  # zipfile.BadZipFile, ValueError (pickled data), EOFError, OSError ...
        raise not_npz from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise not_npz
    try:
        with z:
            return {k: z[k] for k in z.files}
    except Exception:  # an object array inside, a corrupt member
        raise not_npz from None


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read an NPZ written by :func:`save_npz` (never unpickles); returns (arrays, meta)."""
    arrays = read_npz_arrays(path)
    meta = parse_meta(str(arrays.pop("meta")), path) if "meta" in arrays else {}
    return arrays, meta


def load_npz_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` of an NPZ written by :func:`save_npz` alone (its arrays are not read); {} if none."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return loads_strict(str(z["meta"])) if "meta" in z.files else {}
    except FileNotFoundError:
        raise ArtifactError(f"file not found: {path}") from None
    except Exception:  # not an NPZ, a pickled or corrupt member, bad JSON
        raise ArtifactError(f"'{path}' is not an NPZ written by numpy without objects") from None


def save_png(path: str | os.PathLike, image: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write an HxW or HxWxC uint8 array as PNG, with optional tEXt chunks."""
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", pnginfo=info)
    write_bytes(path, buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------------------
#   Tensors files (safetensors with one JSON metadata key)
# ----------------------------------------------------------------------------------------

def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write ``tensors`` and the JSON ``meta`` into one safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    record = freshness.record_for(path)  # an output checkpoint of `interp`: what made it
    meta = meta if record is None else {**meta, "request": record}
    data = _st_save(flat, metadata={META_KEY: meta_dumps(meta), "format": "pt"})
    write_bytes(path, data)
    return Path(path)


def _read_file(path: str | os.PathLike) -> bytes:
    p = existing_file(path)
    try:
        return p.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read '{p}': {e.strerror}") from None


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; returns (tensors, meta)."""
    data = _read_file(path)
    header = parse_header(data, path)
    meta = meta_from_header(header, path)
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own error type for corrupt data
        raise ArtifactError(f"'{path}' is corrupt or truncated: {e}") from None
    return tensors, meta


# ----------------------------------------------------------------------------------------
#   Checkpoints
# ----------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def checkpoint_metadata(model, **extra: Any) -> dict:
    """The metadata of a checkpoint of ``model`` (a :class:`~interpcli.models.Classifier`)."""
    meta = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": "checkpoint",
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "num_classes": model.num_classes,
        "classes": list(model.classes),
        "input_shape": list(model.input_shape),
        "encoding": model.encoder.spec(),
    }
    meta.update(extra)
    meta.setdefault("interp_version", __version__)
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("created", _now())
    return meta


def save_checkpoint(path: str | os.PathLike, model, **meta: Any) -> Path:
    """Write ``model`` (a Classifier) and its metadata to ``path`` atomically.

    Keyword arguments are added to the metadata (``dataset``, ``train_config``,
    ``metrics``, ...).  The weights are those of ``model.net``.
    """
    return save_tensors(path, model.net.state_dict(), checkpoint_metadata(model, **meta))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint: (state dict of the network, metadata).  Never unpickles."""
    tensors, meta = load_tensors(path)
    if meta.get("kind", "checkpoint") != "checkpoint":
        raise ArtifactError(f"'{path}' is a {meta.get('kind')} file, not a model checkpoint")
    for key in ("arch", "num_classes", "input_shape", "encoding"):
        if key not in meta:
            raise ArtifactError(f"'{path}' metadata lacks '{key}'; not an interp checkpoint")
    return tensors, meta


def load_model(path: str | os.PathLike, device: str | torch.device | None = "cpu", eval: bool = True):
    """Rebuild the model of a checkpoint from that file alone.

    Returns a :class:`~interpcli.models.Classifier` (inputs in [0, 1], logits out) whose
    ``meta`` attribute holds the checkpoint metadata.
    """
    state, meta = load_checkpoint(path)
    model = Classifier.from_metadata(meta)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # torch's message is a title line ("Error(s) in loading state_dict for X:") then one line per problem.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        details = lines[1:] or lines or ["mismatch"]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        raise ArtifactError(f"'{path}' weights do not fit arch '{meta['arch']}': {details[0]}{more}") from None
    model.meta = meta
    if device is not None:
        model.to(device)
    return model.eval() if eval else model


def command_line() -> list[str]:
    """The argv of this process, recorded in artifacts for provenance."""
    return [os.path.basename(sys.argv[0])] + sys.argv[1:]
