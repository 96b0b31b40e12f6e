"""``interp consistency --shard I/N`` and ``--merge``: the fidelity scores of a slice of the rows,
and the one report of all slices.

A shard scores the contiguous slice ``I`` of ``N`` of the :data:`~.consistency.WINDOW`-row
windows (:func:`interpcli.dist.shard_range`, as torchrun ranks do), writes an ordinary
consistency folder for its rows and, beside it, ``shard.npz``: every per-row score and curve,
the image rows, and a run key (checkpoint sha256, the attribution files' rows, the fidelity
settings, ``--n-boot`` and ``--seed``).  ``--merge`` checks the folders are the N slices of one
run, each once, joins the rows in order and computes the summary (means, bootstrap intervals,
paired tests) over all of them: the same numbers as one run over all rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts
from ..errors import ConfigError
from ..metrics.fidelity import FidelityResult

SHARD_FILE = "shard.npz"


def run_key(checkpoint: dict[str, Any], rows: int, names: list[str], cfg: Any) -> str:
    """What the shards of one run share: the checkpoint, the files' rows, every setting that
    changes a score or the summary."""
    spec = {"sha256": checkpoint.get("sha256"), "rows": rows, "files": [Path(n).name for n in names],
            "fidelity": dataclasses.asdict(cfg.fidelity) if cfg.fidelity is not None else None,
            "n_boot": cfg.n_boot, "seed": cfg.seed}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_arrays(res: FidelityResult, image_rows: list[dict[str, Any]], shard: tuple[int, int], key: str,
                 checkpoint: dict[str, Any], n_boot: int, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of ``shard.npz``."""
    arrays = {"counts": np.asarray(res.counts), "fractions": np.asarray(res.fractions, dtype=np.float64)}
    arrays |= {f"score/{k}/{m}": np.asarray(v) for k, by in res.scores.items() for m, v in by.items()}
    arrays |= {f"curve/{k}/{m}": np.asarray(v) for k, by in res.curves.items() for m, v in by.items()}
    meta = {"kind": "consistency-shard", "shard": {"index": shard[0], "count": shard[1], "key": key},
            "methods": list(res.methods), "step": res.step, "rows": image_rows, "checkpoint": checkpoint,
            "n_boot": n_boot, "seed": seed}
    return arrays, meta


def _read(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(folder) / SHARD_FILE
    if not path.is_file():
        raise ConfigError(f"'{folder}' is not the output of `interp consistency --shard I/N` (no {SHARD_FILE})")
    arrays, meta = artifacts.load_npz(path)
    if meta.get("kind") != "consistency-shard":
        raise ConfigError(f"'{path}' is not a consistency shard")
    return arrays, meta


def join_shards(folders: list[str | os.PathLike]) -> tuple[FidelityResult, list[dict[str, Any]], dict]:
    """The fidelity result and image rows of all shards, in row order, and the first shard's meta;
    refused unless the folders are every slice of one run, each once."""
    if not folders:
        raise ConfigError("--merge needs the output folders of the --shard I/N runs")
    read = [_read(f) for f in folders]
    first = read[0][1]
    count, key = first["shard"]["count"], first["shard"]["key"]
    seen: dict[int, Any] = {}
    for (arrays, meta), folder in zip(read, folders):
        s = meta["shard"]
        if s["key"] != key or s["count"] != count:
            raise ConfigError(f"'{folder}' is a shard of another run (other checkpoint, files or settings) than "
                              f"'{folders[0]}'")
        if s["index"] in seen:
            raise ConfigError(f"shard {s['index']}/{count} is given twice ('{folder}')")
        seen[s["index"]] = (arrays, meta)
    missing = [i for i in range(count) if i not in seen]
    if missing:
        raise ConfigError(f"shards missing: {', '.join(f'{i}/{count}' for i in missing)}; give every one of the "
                          f"{count} --shard folders")
    parts = [seen[i] for i in range(count)]
    methods = first["methods"]

    def cat(prefix: str) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for name in parts[0][0]:
            if name.startswith(prefix + "/"):
                _, k, m = name.split("/", 2)
                out.setdefault(k, {})[m] = np.concatenate([a[name] for a, _ in parts if len(a[name])])
        return out

    arrays0 = parts[0][0]
    res = FidelityResult(methods=methods, fractions=tuple(float(f) for f in arrays0["fractions"]), step=first["step"],
                         counts=arrays0["counts"], scores=cat("score"), curves=cat("curve"))
    rows = [r for _, meta in parts for r in meta["rows"]]
    return res, rows, first
