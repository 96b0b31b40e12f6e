"""Checkpoint metadata read from the safetensors header, and the JSON encoding of artifacts.

Nothing here imports torch or numpy, so ``interp info`` (and ``interp --version``) start in a
fraction of a second.  :mod:`interpcli.artifacts` (every read and write of tensors) builds on
it; a checkpoint's layout is in ``docs/artifacts.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ArtifactError

__all__ = ["CHECKPOINT_FORMAT_VERSION", "META_KEY", "META_MAX_BYTES", "HEADER_MAX_BYTES", "dumps", "meta_dumps",
           "loads_strict", "parse_meta", "existing_file", "parse_header", "meta_from_header", "read_metadata"]

CHECKPOINT_FORMAT_VERSION = 1
META_KEY = "interp"  # the one key of the safetensors header metadata: a JSON object
META_MAX_BYTES = 4 << 20  # an `interp` metadata value larger than this is refused (ImageNet-21k's class names: 0.5 MB)
HEADER_MAX_BYTES = 100_000_000  # safetensors' own limit on its JSON header


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors (without importing either)
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON of ``obj``; numpy and torch values become numbers and lists, paths strings."""
    return json.dumps(obj, default=_json_default, indent=indent, sort_keys=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key '{k}'")
        out[k] = v
    return out


def loads_strict(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: ``NaN``/``Infinity`` and repeated keys in an object are a
    ``ValueError`` (Python's ``json`` takes the former and keeps the last of the latter)."""
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


def meta_dumps(obj: Any) -> str:
    """The JSON of artifact metadata (a safetensors header's ``interp`` value, an NPZ's ``meta``):
    strict JSON, a non-finite number (a diverged loss) written as null, at most
    :data:`META_MAX_BYTES` (what :func:`meta_from_header` reads back)."""
    text = dumps(obj)
    if "NaN" in text or "Infinity" in text:  # may be inside a string: the round trip keeps strings as they are
        text = json.dumps(json.loads(text, parse_constant=lambda _c: None), allow_nan=False)
    if len(text.encode()) > META_MAX_BYTES:
        raise ArtifactError(f"metadata of {len(text.encode()) / 2**20:.1f} MiB is over the "
                            f"{META_MAX_BYTES / 2**20:.0f} MiB interp reads back")
    return text


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; an :class:`~interpcli.errors.ArtifactError` if it is missing or a folder."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"'{p}' is a directory, not a checkpoint")
    return p


def _check_header_size(n: int, path: str | os.PathLike) -> None:
    if n > HEADER_MAX_BYTES:
        raise ArtifactError(f"'{path}' announces a {n / 1e6:.0f} MB header, over safetensors' limit of "
                            f"{HEADER_MAX_BYTES / 1e6:.0f} MB; refused")


def parse_header(data: bytes, path: str | os.PathLike) -> dict:
    """Read the safetensors JSON header without touching the tensors."""
    if len(data) < 8:
        raise ArtifactError(f"'{path}' is not a safetensors file (truncated: {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ArtifactError(f"'{path}' is not a valid safetensors file (corrupt or truncated header)")
    _check_header_size(n, path)
    try:
        header = loads_strict(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"'{path}' is not a valid safetensors file (unreadable header: {e})") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"'{path}' is not a valid safetensors file")
    return header


def parse_meta(raw: Any, path: str | os.PathLike, what: str = "metadata") -> dict:
    """A metadata JSON object (a checkpoint's ``interp`` value, an NPZ's ``meta``), parsed
    strictly (:func:`loads_strict`) and at most :data:`META_MAX_BYTES` long; anything else is
    an :class:`~interpcli.errors.ArtifactError`."""
    if not isinstance(raw, str):
        raise ArtifactError(f"'{path}' has corrupt {what} (not a string)")
    size = len(raw.encode())
    if size > META_MAX_BYTES:
        raise ArtifactError(f"'{path}' has {size / 2**20:.1f} MiB of {what}, over the "
                            f"{META_MAX_BYTES / 2**20:.0f} MiB limit; refused")
    try:
        meta = loads_strict(raw)
    except ValueError as e:
        raise ArtifactError(f"'{path}' has corrupt {what} ({e})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{path}' has corrupt {what} (not a JSON object)")
    return meta


def meta_from_header(header: dict, path: str | os.PathLike) -> dict:
    """The interp metadata of a parsed header, its format version checked."""
    md = header.get("__metadata__")
    raw = md.get(META_KEY) if isinstance(md, dict) else None
    if raw is None:
        raise ArtifactError(f"'{path}' is a safetensors file without interp metadata; not an interp checkpoint")
    meta = parse_meta(raw, path, "interp metadata")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"'{path}' has no format_version in its metadata")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has checkpoint format version {version}, newer than this interp supports "
            f"({CHECKPOINT_FORMAT_VERSION}); upgrade interp"
        )
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint, read from the header only (cheap for large files)."""
    p = existing_file(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"'{p}' is not a safetensors file (truncated)")
        n = int.from_bytes(head, "little")
        size = p.stat().st_size
        if n <= 0 or 8 + n > size:
            raise ArtifactError(f"'{p}' is not a valid safetensors file (corrupt or truncated header)")
        _check_header_size(n, p)  # before reading it
        data = head + f.read(n)
    header = parse_header(data, p)
    meta = meta_from_header(header, p)
    # The header lists every tensor's byte range: a file shorter than the last one is truncated.
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, IndexError, TypeError, ValueError):
        raise ArtifactError(f"'{p}' is not a valid safetensors file (corrupt tensor table)") from None
    if 8 + n + end > size:
        raise ArtifactError(f"'{p}' is truncated ({size} bytes, header promises {8 + n + end})")
    return meta
