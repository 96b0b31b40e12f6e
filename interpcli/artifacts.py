"""The one place for artifact I/O: checkpoints (safetensors + metadata), NPZ, JSON, PNG.

Every write is atomic: the bytes go to a temporary file in the destination folder,
are fsync'ed, and the file is renamed over the destination, so a killed process never
leaves a half-written artifact (the previous version, if any, stays intact).

A checkpoint is one ``.safetensors`` file.  Its header metadata (``Dict[str, str]``)
holds a single key, ``interp``, whose value is a JSON object describing everything
needed to rebuild and use the model (see ``docs/artifacts.md``).  Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
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

from . import __version__
from .errors import ArtifactError, ConfigError
from .models import Classifier

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "atomic_write",
    "write_bytes",
    "check_output_path",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_metadata",
    "save_tensors",
    "load_tensors",
    "save_json",
    "save_npz",
    "load_npz",
    "save_png",
    "sha256_file",
]

CHECKPOINT_FORMAT_VERSION = 1
_META_KEY = "interp"


# ----------------------------------------------------------------------------------------
#   Atomic writes
# ----------------------------------------------------------------------------------------

def check_output_path(path: str | os.PathLike) -> Path:
    """Validate an output file path before any work is done: its folder must exist."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise ConfigError(f"output path '{p}' is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"output folder '{parent}' does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"output folder '{parent}' is not writable")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, default=_json_default, indent=indent, sort_keys=False)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    write_bytes(path, (dumps(obj, indent=2) + "\n").encode())
    return Path(path)


def save_npz(path: str | os.PathLike, meta: dict | None = None, **arrays: Any) -> Path:
    """Write a compressed NPZ; ``meta`` is stored as a JSON string under the key ``meta``."""
    buf = io.BytesIO()
    out = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in arrays.items()}
    if meta is not None:
        out["meta"] = np.array(dumps(meta))
    np.savez_compressed(buf, **out)
    write_bytes(path, buf.getvalue())
    return Path(path)


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read an NPZ written by :func:`save_npz` (never unpickles); returns (arrays, meta)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArtifactError(f"file not found: {path}") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object), OSError ...
        raise ArtifactError(f"cannot read NPZ '{path}': {e}") from None
    meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    return arrays, meta


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
    data = _st_save(flat, metadata={_META_KEY: dumps(meta), "format": "pt"})
    write_bytes(path, data)
    return Path(path)


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"'{p}' is a directory, not a checkpoint")
    return p


def _read_file(path: str | os.PathLike) -> bytes:
    p = _existing_file(path)
    try:
        return p.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read '{p}': {e.strerror}") from None


def _parse_header(data: bytes, path: str | os.PathLike) -> dict:
    """Read the safetensors JSON header without touching the tensors."""
    if len(data) < 8:
        raise ArtifactError(f"'{path}' is not a safetensors file (truncated: {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ArtifactError(f"'{path}' is not a valid safetensors file (corrupt or truncated header)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"'{path}' is not a valid safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"'{path}' is not a valid safetensors file")
    return header


def _meta_from_header(header: dict, path: str | os.PathLike) -> dict:
    md = header.get("__metadata__")
    raw = md.get(_META_KEY) if isinstance(md, dict) else None
    if raw is None:
        raise ArtifactError(f"'{path}' is a safetensors file without interp metadata; not an interp checkpoint")
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise ArtifactError(f"'{path}' has corrupt interp metadata") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{path}' has corrupt interp metadata")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"'{path}' has no format_version in its metadata")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has checkpoint format version {version}, newer than this interp supports "
            f"({CHECKPOINT_FORMAT_VERSION}); upgrade interp"
        )
    return meta


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; returns (tensors, meta)."""
    data = _read_file(path)
    header = _parse_header(data, path)
    meta = _meta_from_header(header, path)
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own error type for corrupt data
        raise ArtifactError(f"'{path}' is corrupt or truncated: {e}") from None
    return tensors, meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint, read from the header only (cheap for large files)."""
    p = _existing_file(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"'{p}' is not a safetensors file (truncated)")
        n = int.from_bytes(head, "little")
        size = p.stat().st_size
        if n <= 0 or 8 + n > size:
            raise ArtifactError(f"'{p}' is not a valid safetensors file (corrupt or truncated header)")
        data = head + f.read(n)
    header = _parse_header(data, p)
    meta = _meta_from_header(header, p)
    # The header lists every tensor's byte range: a file shorter than the last one is truncated.
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, IndexError, TypeError, ValueError):
        raise ArtifactError(f"'{p}' is not a valid safetensors file (corrupt tensor table)") from None
    if 8 + n + end > size:
        raise ArtifactError(f"'{p}' is truncated ({size} bytes, header promises {8 + n + end})")
    return meta


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
