"""``interp import``: a torchvision or timm model with local weights, as an interp checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ..ops.import_model import ENCODINGS, import_model
from ._app import app
from ._console import err, print_json, print_paths
from ._options import ForceOpt, JsonOpt, QuietOpt, choice, parse_kv, value

_M = "Model"
EncodingChoice = choice("Encoding", ENCODINGS)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--{what} expects comma-separated numbers (0.485,0.456,0.406), got '{text}'") from None


@app.command("import", rich_help_panel="Models")
def import_cmd(
    arch: Annotated[str, typer.Argument(help="The architecture: a torchvision classification model name (resnet18, vgg11, densenet121, efficientnet_b0, vit_b_16, ...; torchvision:NAME alike) or timm:NAME (needs `pip install 'interpcli[timm]'`).", show_default=False)],
    weights: Annotated[Path, typer.Argument(help="The weights: a .safetensors file, or a .pth/.pt state dict (read with torch.load(weights_only=True): a file with pickled objects is refused).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The checkpoint to write (.safetensors; its folder must exist; an existing file needs --force).", rich_help_panel="Output")] = Path("imported.safetensors"),
    input_size: Annotated[Optional[int], typer.Option("--input-size", min=1, help="Side of the square images the model takes [default: the arch's usual size, 224 for most; 299 for inception_v3].", show_default=False, rich_help_panel=_M)] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="Per-channel mean of the normalisation the model expects, pixels in [0, 1] (R,G,B) [default: ImageNet's 0.485,0.456,0.406, or a timm model's own].", show_default=False, rich_help_panel=_M)] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="Per-channel std of that normalisation [default: ImageNet's 0.229,0.224,0.225, or a timm model's own].", show_default=False, rich_help_panel=_M)] = None,
    encoding: Annotated[Optional[EncodingChoice], typer.Option("--encoding", help="normalize ((x - mean) / std, the default) or identity (the model takes pixels in [0, 1] as they are).", show_default=False, rich_help_panel=_M)] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Class names in logit order: a file (one name a line, or a .json list) or a,b,c [default: 0..N-1].", show_default=False, rich_help_panel=_M)] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", min=1, help="Number of outputs [default: the rows of the weights' classifier].", show_default=False, rich_help_panel=_M)] = None,
    arch_arg: Annotated[Optional[list[str]], typer.Option("--arch-arg", help="Option KEY=VALUE of the library's builder (dropout=0.2, aux_logits=false, transform_input=true); repeatable.", rich_help_panel=_M)] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make an interp checkpoint of a model trained elsewhere: a torchvision or timm architecture
    and a local weights file, with the input size, normalisation and class names it expects.

    The network is built with random weights (nothing is ever downloaded) and the file's weights
    are loaded into it exactly (a missing, extra or mis-shaped tensor is an error naming it);
    wrappers ({'state_dict': ...}, {'model': ...}) and 'module.' prefixes are undone.  Images keep
    going in as pixels in [0, 1]: the normalisation is recorded in the checkpoint and applied inside
    the model, so its logits are the original model's on normalised images.
    stdout: the checkpoint written (--json: what was recorded).

    Example:

        interp import resnet18 resnet18.pth --classes classes.txt -o runs/r18.safetensors

        interp import timm:convnext_tiny convnext.safetensors --num-classes 10 --mean 0.5 --std 0.5 -o runs/cnx.safetensors

        interp explain runs/r18.safetensors photo.jpg -m gradcam -m occlusion -o out/r18
    """
    summary, path = import_model(arch, weights, out, input_size=input_size, mean=_floats(mean, "mean"),
                                 std=_floats(std, "std"), encoding=value(encoding), classes=classes, num_classes=num_classes,
                                 arch_kwargs=parse_kv(arch_arg, "--arch-arg"), force=force)
    if not quiet:
        enc = summary["encoding"]
        how = f"mean {enc['mean']}, std {enc['std']}" if enc["kind"] == "normalize" else "pixels as they are"
        err.print(f"{summary['arch']}: {summary['parameters']:,} parameters, {summary['num_classes']} classes, "
                  f"input {'x'.join(map(str, summary['input_shape']))}, {how}", markup=False)
    if json_out:
        print_json(summary)
    else:
        print_paths([path])
