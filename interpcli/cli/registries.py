"""``interp models``, ``interp datasets``, ``interp methods``."""

from __future__ import annotations

from ..ops.registries import dataset_rows, method_rows, model_rows
from ._app import app
from ._console import print_listing
from ._options import JsonOpt


@app.command("models", rich_help_panel="Registries")
def models_cmd(json_out: JsonOpt = False) -> None:
    """List the architectures: parameter count, expected input, default CAM layer, options.

    Piped, one name per line; `--json` for every field (layers, options, recipe).

    Example:

        interp models --json | jq '.[] | select(.family == "baseline") | .name'
    """
    print_listing(model_rows(), [("name", lambda r: r["name"]), ("family", lambda r: r["family"]),
                                 ("params", lambda r: f"{r['params']:,}"),
                                 ("input", lambda r: "x".join(map(str, r["input"]))),
                                 ("target layer", lambda r: str(r["target_layer"])),
                                 ("description", lambda r: r["description"])], json_out)


@app.command("datasets", rich_help_panel="Registries")
def datasets_cmd(json_out: JsonOpt = False) -> None:
    """List the datasets, their shapes and whether they need files (nothing is downloaded).

    Example:

        interp datasets
    """
    print_listing(dataset_rows(), [("name", lambda r: r["name"]),
                                   ("input", lambda r: "x".join(map(str, r["input"])) if r["input"] else "any"),
                                   ("classes", lambda r: str(r["classes"] or "any")),
                                   ("files", lambda r: "yes" if r["needs_files"] else "embedded"),
                                   ("description", lambda r: r["description"])], json_out)


@app.command("methods", rich_help_panel="Registries")
def methods_cmd(json_out: JsonOpt = False) -> None:
    """List the attribution methods of `interp explain`: kind, sign, parameters and defaults.

    Example:

        interp methods --json | jq '.[] | select(.kind == "gradient") | .name'
    """
    print_listing(method_rows(), [("method", lambda r: r["name"]), ("kind", lambda r: r["kind"]),
                                  ("signed", lambda r: "yes" if r["signed"] else "no"),
                                  ("parameters", lambda r: ", ".join(f"{k}={v}" for k, v in r["defaults"].items())),
                                  ("description", lambda r: r["description"])], json_out)
