"""Options shared by several commands, declared once, and the parsing of KEY=VALUE options.

Bundles: the *input* options (image files, ``--npz``, ``--dataset``, ``--data-dir``,
``--split``, ``--indices``) become one :class:`~interpcli.inputs.InputSpec` through
:func:`input_spec`; *output* options (``--out``, ``--force``, ``--png``, ``--json``, ``--quiet``) and
*performance* options (``--device``, ``--batch-size``, ``--fast``, ``--compile``) are the
annotated types below.  Closed sets are choices built from the registries (:func:`choice`),
so ``--help`` lists them and shell completion offers them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..data import list_datasets
from ..errors import ConfigError
from ..inputs import InputSpec
from ..methods import get_method, list_methods
from ..models import list_models
from ._flags import CheckpointArg, JsonOpt  # declared there: `interp info` needs them without the registries

__all__ = ["choice", "value", "parse_kv", "method_params", "input_spec", "ArchChoice", "DatasetChoice",
           "MethodChoice", "DeviceOpt", "JsonOpt", "QuietOpt", "DataDirOpt", "CheckpointArg", "ImagesArg", "DatasetOpt",
           "SplitOpt", "IndicesOpt", "NpzOpt", "PngOpt", "BatchSizeOpt", "FastOpt", "CompileOpt", "TF32Opt",
           "SeedOpt", "ForceOpt", "ChunkOpt", "ShardOpt", "PngRowsOpt", "MergeOpt"]


def choice(name: str, values: Iterable[str]) -> type[enum.Enum]:
    """A str Enum whose members are ``values``: typer turns it into a checked choice with completion."""
    return enum.Enum(name, {v: v for v in values}, type=str)


def value(v: Any) -> Any:
    """The plain value of a choice (or of a list of choices); anything else as it is."""
    if isinstance(v, list):
        return [value(x) for x in v]
    return v.value if isinstance(v, enum.Enum) else v


ArchChoice = choice("Arch", list_models())
DatasetChoice = choice("Dataset", list_datasets())
MethodChoice = choice("Method", ["list", *list_methods()])


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["width=32", "hidden=[64,32]", "activation=tanh"]`` -> dict (values as JSON, else strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} expects KEY=VALUE, got '{item}'")
        try:
            out[key.replace("-", "_")] = json.loads(val)
        except (ValueError, RecursionError):  # not JSON (RecursionError: "[[[[..." nested too deep)
            out[key.replace("-", "_")] = val
    return out


def method_params(methods: list[str], items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--param steps=128`` goes to every method that has ``steps``; ``--param intgrad.steps=128`` to one.

    Values are checked against each method's declarations and coerced to their types
    (:meth:`~interpcli.methods.MethodInfo.check`), before any model is loaded."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for key, val in parse_kv(items, "--param").items():
        scope, _, name = key.rpartition(".")
        targets = [scope] if scope else [m for m in methods if name in get_method(m).defaults]
        if scope and scope not in methods:
            raise ConfigError(f"--param {key}: method '{scope}' is not among --method {', '.join(methods)}")
        if not targets or any(name not in get_method(m).defaults for m in targets):
            raise ConfigError(f"--param {key}: no selected method has a parameter '{name}'")
        for m in targets:
            out[m][name] = val
    return {m: get_method(m).check(p) for m, p in out.items()}


# ---------------------------------------------------------------------------------------------- inputs

_IN = "Input"
ImagesArg = Annotated[Optional[list[Path]], typer.Argument(help="Image files (PNG/JPEG); or use --dataset/--npz.",
                                                           show_default=False)]
DatasetOpt = Annotated[Optional[str], typer.Option(
    "--dataset", "-d", help="Images of a dataset split (default: the checkpoint's when no images are given).",
    rich_help_panel=_IN)]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder (or .npz file) with the dataset's files; default $INTERP_DATA_DIR or ./data.",
    rich_help_panel=_IN)]
SplitOpt = Annotated[str, typer.Option("--split", help="train or test.", rich_help_panel=_IN)]
IndicesOpt = Annotated[Optional[str], typer.Option(
    "--indices", help="START:STOP or comma-separated indices of the dataset split or of the --npz images "
    "[default: 0:8 of a split, all of an NPZ]; not with image files.", show_default=False, rich_help_panel=_IN)]
NpzOpt = Annotated[Optional[Path], typer.Option("--npz", help="An NPZ with an `images` array (e.g. another command's "
                                                "output).", rich_help_panel=_IN)]


def input_spec(images: list[Path] | None, npz: Path | None, dataset: str | None, data_dir: Path | None, split: str,
               indices: str | None) -> InputSpec:
    """The input options of a command as one :class:`~interpcli.inputs.InputSpec`."""
    return InputSpec(images=images or None, npz=npz, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
                     split=split, indices=indices)


# ---------------------------------------------------------------------------------------------- outputs

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors and warnings: no progress, "
                                        "tables or logs (INTERP_PROGRESS=0: no progress only).")]
PngOpt = Annotated[bool, typer.Option("--png/--no-png", help="Write PNG overlays (and grid.png).",
                                      rich_help_panel="Output")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of everything random (masks, noise, sampling).")]
OutFolderOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Output folder (its parent must exist; an existing one needs --force).",
    rich_help_panel="Output")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output (a folder as a whole: never a mix "
                                        "of old and new files); without it an existing output is an error.",
                                        rich_help_panel="Output")]

# ---------------------------------------------------------------------------------------------- performance

_PERF = "Performance"
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps; $INTERP_DEVICE replaces auto.",
    rich_help_panel=_PERF)]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", "-b", min=1, help="Images per forward pass (default: from the free memory on CUDA, per method "
    "elsewhere).", rich_help_panel=_PERF)]
FastOpt = Annotated[bool, typer.Option(
    "--fast/--no-fast", help="Eval fast path: BatchNorm folded into the convolutions, channels_last (same results "
    "to float rounding).", rich_help_panel=_PERF)]
TF32Opt = Annotated[bool, typer.Option(
    "--tf32", help="CUDA only: TF32 matmuls and convolutions, 2-3x faster on recent GPUs but ~1e-3 relative error "
    "(completeness identities then hold to ~1e-3 only); default full float32.", rich_help_panel=_PERF)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Also torch.compile the model (slow first call; pays off "
                                          "on many images).", rich_help_panel=_PERF)]

# ---------------------------------------------------------------------------------------------- scale

_SCALE = "Scale"
ChunkOpt = Annotated[int, typer.Option(
    "--chunk", min=1, help="Images per chunk: each is explained and written (one part of the output) before the "
    "next is read, so memory does not grow with the number of images.", rich_help_panel=_SCALE)]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="I/N: explain only the I-th of N contiguous slices of the chunks (0-based) into a folder of its "
    "own; join the N folders with --merge. Under torchrun every rank takes its slice itself.",
    show_default=False, rich_help_panel=_SCALE)]
PngRowsOpt = Annotated[int, typer.Option(
    "--png-rows", min=0, help="Draw the PNGs (per row and grid.png) of the first N rows only.",
    rich_help_panel="Output")]
MergeOpt = Annotated[bool, typer.Option(
    "--merge", help="The arguments are the output folders of the N --shard I/N runs of one command: check they "
    "belong together and join them into --out (nothing is recomputed).", rich_help_panel=_SCALE)]
