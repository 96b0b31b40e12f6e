"""Runs for ``interp compare``: one flat record per checkpoint or metric JSON file, grouped and
paired.

    runs = [read_run(p) for p in expand_runs(["runs/"], {})]
    groups = assign_groups(runs, ("arch",))            # {"resnet20": [Run, ...], "bcos-resnet20": [...]}
    lookup(runs[0].fields, "test_acc")                 # metrics.test_acc of a checkpoint

A checkpoint's record is its metadata (read from the header only, no torch) flattened with dots:
``arch``, ``metrics.test_acc``, ``train_config.seed``, ``train_config.arch_kwargs.bias``, ...; its
``accuracy`` is ``metrics.test_acc``.  A JSON file's record is its object flattened the same way
(lists are left out); when it names a ``checkpoint`` that exists (``interp eval --json``), that
checkpoint's fields are added where the file has none, so an eval result groups by the arch
and pairs by the seed and fold of the run it evaluated.  Every record also has ``file`` and
``folder`` (the file's name and its folder's name) unless the file has them.

A short key is looked up as written, then under ``metrics.``, ``train_config.``,
``train_config.arch_kwargs.``, ``arch_kwargs.``, ``dataset.``, ``train_config.dataset_options.``
in this order (:data:`PREFIXES`): ``seed`` finds ``train_config.seed``, ``bias`` the arch option.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ConfigError, InterpError
from ..metadata import read_metadata

__all__ = ["Run", "PREFIXES", "MISSING", "flatten", "lookup", "is_number", "read_run", "expand_runs",
           "assign_groups", "pair_key", "numeric_fields"]

PREFIXES = ("metrics.", "train_config.", "train_config.arch_kwargs.", "arch_kwargs.", "dataset.",
            "train_config.dataset_options.")
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()
STATE_SUFFIX = ".state.safetensors"  # a training state beside a checkpoint, not a finished run


def is_run_checkpoint(name: str) -> bool:
    """A finished run's checkpoint, not a file beside one (training state, sparsify's feature cache)."""
    return name.endswith(".safetensors") and not name.endswith(STATE_SUFFIX) and ".features-" not in name


@dataclasses.dataclass
class Run:
    """One run: its ``path`` (as given), ``kind`` (``checkpoint`` or ``json``), the flat ``fields``
    and the file's ``sha256``; ``group`` once :func:`assign_groups` placed it."""

    path: str
    kind: str
    fields: dict[str, Any]
    sha256: str = ""
    group: str = ""

    def get(self, key: str) -> Any:
        return lookup(self.fields, key)


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1}``: nested objects joined with dots, scalars
    (numbers, strings, booleans, null) kept, lists left out."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif v is None or isinstance(v, (str, int, float, bool)):
            out[key] = v
    return out


def lookup(fields: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` (see the module doc for short keys); :data:`MISSING` when absent."""
    if key in fields:
        return fields[key]
    for p in PREFIXES:
        if p + key in fields:
            return fields[p + key]
    return MISSING


def is_number(v: Any) -> bool:
    """An int or float (not a bool); NaN counts (a run whose metric is undefined)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def numeric_fields(fields: Mapping[str, Any]) -> list[str]:
    """The numeric fields a metric can be taken from: top-level ones and ``metrics.*`` (config
    and dataset numbers are settings, not results)."""
    skip = {"format_version", "num_classes", "world_size"}
    return [k for k, v in fields.items()
            if is_number(v) and k not in skip and ("." not in k or k.startswith("metrics."))]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"run not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError:
        raise ArtifactError(f"'{path}' is not JSON (give checkpoints or JSON files with numbers)") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"'{path}' holds a JSON {type(data).__name__}, not an object with metrics")
    return data


def _checkpoint_fields(path: str | os.PathLike) -> dict[str, Any]:
    meta = read_metadata(path)
    if meta.get("kind", "checkpoint") != "checkpoint":
        raise ConfigError(f"'{path}' is a {meta.get('kind')} file, not a finished run's checkpoint")
    fields = flatten(meta)
    if "accuracy" not in fields and is_number(fields.get("metrics.test_acc")):
        fields["accuracy"] = fields["metrics.test_acc"]
    return fields


def read_run(path: str | os.PathLike, sha256: Any = None) -> Run:
    """The record of a checkpoint (``.safetensors``) or a JSON file; ``sha256`` (a function of a
    path) hashes the file for provenance."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"'{p}' is a folder; give checkpoints or JSON files (or the folder's checkpoints)")
    if p.name.endswith(".safetensors"):
        kind, fields = "checkpoint", _checkpoint_fields(p)
    else:
        kind, fields = "json", flatten(_read_json(p))
        ckpt = fields.get("checkpoint", fields.get("checkpoint.path"))
        if isinstance(ckpt, str) and ckpt.endswith(".safetensors") and Path(ckpt).is_file():
            try:
                for k, v in _checkpoint_fields(ckpt).items():
                    fields.setdefault(k, v)
            except InterpError:
                pass  # the JSON's own numbers still count; the checkpoint only adds grouping keys
    fields.setdefault("file", p.name)
    fields.setdefault("folder", p.resolve().parent.name)
    return Run(str(path), kind, fields, sha256(p) if sha256 else "")


def expand_runs(paths: Sequence[str | os.PathLike], patterns: Mapping[str, str] | None = None) -> list[Path]:
    """The run files: each path (a folder stands for its checkpoints, training states left out),
    then the files each ``--group NAME=GLOB`` pattern matches; each file once, in that order."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.safetensors") if is_run_checkpoint(f.name))
            if not found:
                raise ConfigError(f"folder '{p}' holds no checkpoint (*.safetensors)")
            for f in found:
                out.setdefault(str(f.resolve()), f)
        elif not p.exists():
            raise ConfigError(f"run not found: {p}")
        else:
            out.setdefault(str(p.resolve()), p)
    for name, pat in (patterns or {}).items():
        hits = sorted(Path(h) for h in glob.glob(pat) if Path(h).is_file()
                      and (is_run_checkpoint(Path(h).name) or not h.endswith(".safetensors")))
        if not hits and not any(_matches(str(p), pat) for p in out.values()):
            raise ConfigError(f"--group {name}={pat} matches no file")
        for h in hits:
            out.setdefault(str(h.resolve()), h)
    if not out:
        raise ConfigError("no runs: give checkpoints or JSON files (or --group NAME=GLOB)")
    return list(out.values())


def _matches(path: str, pattern: str) -> bool:
    """``path`` (as given, or absolute) matches the glob ``pattern`` (as given, or made absolute)."""
    absolute = str(Path(path).resolve())
    return (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(absolute, pattern)
            or fnmatch.fnmatch(absolute, os.path.abspath(pattern)))


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(str(v) if k == "arch" else f"{k}={v}" for k, v in zip(keys, values))


def assign_groups(runs: Sequence[Run], group_by: Sequence[str] = ("arch",),
                  patterns: Mapping[str, str] | None = None, fallback: bool = False) -> dict[str, list[Run]]:
    """Runs by group, in order of first appearance (of ``patterns``' order when given).

    ``patterns`` (NAME -> glob, ``--group``): each run joins the first group whose pattern
    matches its path; a run no pattern matches is an error.  Otherwise the values of the
    ``group_by`` keys name the group (``resnet20``, ``bias=False``); with ``fallback`` (the
    default grouping) a run without them joins the group of its folder's name."""
    groups: dict[str, list[Run]] = {name: [] for name in (patterns or {})}
    for r in runs:
        if patterns:
            name = next((n for n, pat in patterns.items() if _matches(r.path, pat)), None)
            if name is None:
                raise ConfigError(f"run '{r.path}' matches no --group pattern ({', '.join(patterns.values())})")
        else:
            values = [r.get(k) for k in group_by]
            missing = [k for k, v in zip(group_by, values) if v is MISSING]
            if missing and not fallback:
                raise ConfigError(f"run '{r.path}' has no '{missing[0]}' to group by; give --group-by another key "
                                  "or --group NAME=GLOB")
            name = f"folder {r.fields['folder']}" if missing else _label(group_by, values)
        r.group = name
        groups.setdefault(name, []).append(r)
    return {g: rs for g, rs in groups.items() if rs}


def pair_key(run: Run, pair_by: Sequence[str]) -> tuple | None:
    """The values of the ``pair_by`` keys (``seed``, ``fold``) that pair this run with the runs of
    other groups; None when one is missing (the run pairs with nothing)."""
    values = tuple(run.get(k) for k in pair_by)
    if not pair_by or any(v is MISSING for v in values):
        return None
    return tuple(v if not (isinstance(v, float) and math.isnan(v)) else None for v in values)
