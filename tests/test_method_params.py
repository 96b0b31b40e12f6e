"""Method parameters are declared in the registry, typed and range-checked (``methods/params.py``).

Every parameter of every registered method has a declaration (so a new method cannot forget
one); ``attribute`` coerces good values (``"4"`` -> 4, ``"true"`` -> True, ``"null"`` -> None)
and refuses bad ones with one ConfigError line; the CLI turns that into ``Error:`` and exit 2.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from interpcli.artifacts import load_npz
from interpcli.cli import app
from interpcli.errors import ConfigError
from interpcli.methods import Param, attribute, get_method, list_methods, register_method


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()


X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------- declarations

@pytest.mark.parametrize("name", list_methods())
def test_every_parameter_is_declared_and_its_default_passes(name):
    info = get_method(name)
    assert set(info.params) == set(info.defaults), f"{name}: declare every parameter in params="
    for key, spec in info.params.items():
        assert isinstance(spec, Param), (name, key)
        assert spec.describe() and spec.as_dict()["type"] in ("int", "float", "bool", "choice", "str")
        assert info.check({key: info.defaults[key]}) == {key: info.defaults[key]}, (name, key)


def test_registration_refuses_an_undeclared_parameter():
    deco = register_method("undeclared-test", description="-", kind="gradient", uses_gradients=True,
                           defaults={"steps": 4}, params={})
    with pytest.raises(ValueError, match="steps"):
        deco(lambda model, x, target, *, batch_size=None, steps=4: x)
    assert "undeclared-test" not in list_methods()


# ---------------------------------------------------------------------------------------------- bad values

BAD = [
    ("intgrad", {"steps": 0}, "steps must be an integer >= 1, got 0"),
    ("smoothgrad", {"n_samples": "abc"}, "n_samples must be an integer >= 1, got 'abc'"),
    ("smoothgrad", {"sigma": -1}, "sigma must be a number >= 0, got -1"),
    ("smoothgrad", {"n_samples": 2.5}, "n_samples must be an integer >= 1"),
    ("smoothgrad", {"sigma": float("nan")}, "sigma must be a number >= 0"),
    ("vargrad", {"n_samples": True}, "n_samples must be an integer >= 1, got True"),
    ("vargrad", {"seed": 0.5}, "seed must be an integer, got 0.5"),
    ("vargrad", {"sigma": "wide"}, "sigma must be a number >= 0"),
    ("grad", {"abs": "maybe"}, "abs must be true or false, got 'maybe'"),
    ("grad", {"abs": 2}, "abs must be true or false"),
    ("intgrad", {"steps": None}, "steps must be an integer >= 1, got None"),
    ("intgrad", {"baseline": "white"}, "baseline must be one of black, blurred, uniform"),
    ("intgrad", {"rule": "simpson"}, "rule must be one of riemann, gausslegendre"),
    ("intgrad", {"seed": "x"}, "seed must be an integer"),
    ("deeplift", {"steps": 0}, "steps must be an integer >= 1"),
    ("deeplift", {"baseline": 0}, "baseline must be one of black, blurred, uniform"),
    ("deeplift", {"seed": 1.5}, "seed must be an integer"),
    ("gradcam", {"layer": ["conv"]}, "layer must be a string or null"),
    ("gradcam++", {"layer": True}, "layer must be a string or null"),
    ("occlusion", {"window": 0}, "window must be an integer >= 1, got 0"),
    ("occlusion", {"stride": -2}, "stride must be an integer >= 1"),
    ("occlusion", {"fill": "zero"}, "fill must be a number or mean, got 'zero'"),
    ("occlusion", {"incremental": "sometimes"}, "incremental must be auto, true or false"),
    ("rise", {"n_masks": "many"}, "n_masks must be an integer >= 1"),
    ("rise", {"s": 0}, "s must be an integer >= 1"),
    ("rise", {"p": 0}, "p must be a number in (0, 1], got 0"),
    ("rise", {"p": 1.5}, "p must be a number in (0, 1]"),
    ("rise", {"score": "softmax"}, "score must be one of prob, logit"),
    ("rise", {"fill": "grey"}, "fill must be a number, mean or zero, got 'grey'"),
    ("rise", {"seed": "-3x"}, "seed must be an integer"),
    ("lime", {"n_samples": 0}, "n_samples must be an integer >= 1"),
    ("lime", {"n_segments": 0}, "n_segments must be an integer >= 1"),
    ("lime", {"segmentation": "quickshift"}, "segmentation must be one of slic, grid"),
    ("lime", {"compactness": 0}, "compactness must be a number > 0"),
    ("lime", {"fill": "noise"}, "fill must be a number, superpixel, mean or blurred"),
    ("lime", {"kernel_width": 0}, "kernel_width must be a number > 0"),
    ("lime", {"alpha": -0.1}, "alpha must be a number >= 0"),
    ("lime", {"score": "margin"}, "score must be one of prob, logit"),
    ("kernelshap", {"n_samples": 1}, "n_samples must be an integer >= 2"),
    ("kernelshap", {"n_segments": "ten"}, "n_segments must be an integer >= 1"),
    ("kernelshap", {"fill": "grey"}, "fill must be a number, superpixel, mean or blurred"),
    ("rosa", {"window": 0}, "window must be an integer >= 1"),
    ("rosa", {"fill": "grey"}, "fill must be a number, zero, mean, blur or noise"),
    ("rosa", {"grad_prune": 0}, "grad_prune must be a number in (0, 1] or null, got 0"),
    ("rosa", {"grad_prune": 1.5}, "grad_prune must be a number in (0, 1] or null"),
    ("rosa", {"distance": "manhattan"}, "distance must be one of cosine, cos2, l2"),
    ("rosa", {"layer": 1j}, "layer must be a string or null"),
    ("osa-das", {"views": 0}, "views must be an integer >= 1"),
    ("osa-das", {"k": 0}, "k must be an integer >= 1"),
    ("osa-das", {"angles": "some"}, "angles must be an integer >= 1, all or first"),
    ("osa-das", {"augment": None}, "augment must be a string, got None"),
    ("osa-das", {"stride": 0}, "stride must be an integer >= 1"),
    ("gds", {"gds_dim": 0}, "gds_dim must be a number > 0"),
    ("gds", {"gds_dim": 1.5}, "gds_dim must be a number > 0 (whole from 1 on), got 1.5"),
    ("gds", {"gds_mode": "both"}, "gds_mode must be one of repr, subspace"),
    ("gds", {"distance": "l1"}, "distance must be one of cosine, cos2, l2"),
]


@pytest.mark.parametrize("method,params,needle", BAD, ids=[f"{m}-{next(iter(p))}" for m, p, _ in BAD])
def test_bad_values_are_one_config_error(method, params, needle):
    with pytest.raises(ConfigError) as e:
        attribute(_tiny(), X, 0, method, **params)
    message = str(e.value)
    assert message.startswith(f"method '{method}': ") and needle in message and "\n" not in message, message


def test_the_bad_table_covers_every_method_with_parameters():
    covered = {m for m, _, _ in BAD}
    assert [m for m in list_methods() if get_method(m).defaults and m not in covered] == []


# ---------------------------------------------------------------------------------------------- coercion

GOOD = [
    ("smoothgrad", {"n_samples": "4", "sigma": "0.5", "seed": 3.0}, {"n_samples": 4, "sigma": 0.5, "seed": 3}),
    ("smoothgrad", {"sigma": 0}, {"sigma": 0.0}),
    ("grad", {"abs": "true"}, {"abs": True}),
    ("grad", {"abs": "False"}, {"abs": False}),
    ("intgrad", {"steps": "8", "baseline": "blurred"}, {"steps": 8, "baseline": "blurred"}),
    ("occlusion", {"incremental": "false", "fill": "mean", "window": "4"},
     {"incremental": False, "fill": "mean", "window": 4}),
    ("occlusion", {"incremental": 1, "fill": 0}, {"incremental": True, "fill": 0.0}),
    ("occlusion", {"incremental": "auto"}, {"incremental": "auto"}),
    ("rise", {"fill": "0.75", "p": 1}, {"fill": 0.75, "p": 1.0}),
    ("gradcam", {"layer": None}, {"layer": None}),
    ("gradcam", {"layer": "null"}, {"layer": None}),
    ("gradcam", {"layer": 0}, {"layer": "0"}),
    ("rosa", {"grad_prune": "none", "layer": "logits"}, {"grad_prune": None, "layer": "logits"}),
    ("rosa", {"grad_prune": "0.25"}, {"grad_prune": 0.25}),
    ("osa-das", {"angles": "2", "augment": "strong:scale=0.5"}, {"angles": 2, "augment": "strong:scale=0.5"}),
    ("osa-das", {"angles": "first"}, {"angles": "first"}),
    ("gds", {"gds_dim": 2}, {"gds_dim": 2}),
    ("gds", {"gds_dim": 0.25}, {"gds_dim": 0.25}),
]


@pytest.mark.parametrize("method,params,expected", GOOD)
def test_good_values_are_coerced_to_their_type(method, params, expected):
    out = get_method(method).check(params)
    assert out == expected and [type(v) for v in out.values()] == [type(v) for v in expected.values()]


def test_attribute_runs_the_method_on_coerced_values():
    model = _tiny()
    assert torch.equal(attribute(model, X, 1, "grad", abs="true"), attribute(model, X, 1, "grad", abs=True))
    assert not torch.equal(attribute(model, X, 1, "grad", abs="false"), attribute(model, X, 1, "grad", abs=True))
    a = attribute(model, X, 1, "smoothgrad", n_samples="3", sigma="0.1", seed="2")
    assert torch.equal(a, attribute(model, X, 1, "smoothgrad", n_samples=3, sigma=0.1, seed=2))


# ---------------------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("args,needle", [
    (["-m", "intgrad", "-p", "intgrad.steps=0"], "method 'intgrad': steps must be an integer >= 1, got 0"),
    (["-m", "smoothgrad", "-p", "smoothgrad.n_samples=abc"],
     "method 'smoothgrad': n_samples must be an integer >= 1, got 'abc'"),
    (["-m", "smoothgrad", "-p", "smoothgrad.sigma=-1"], "method 'smoothgrad': sigma must be a number >= 0, got -1"),
    (["-m", "grad", "-m", "deeplift", "-p", "steps=0"], "method 'deeplift': steps must be an integer >= 1"),
    (["-m", "occlusion", "-p", "fill=grey"], "method 'occlusion': fill must be a number or mean, got 'grey'"),
])
def test_cli_bad_param_is_one_error_line_and_exit_2(digits_ckpt, tmp_path, args, needle):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), *args, "-o", str(out), "-q"])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], r.stderr
    assert not out.exists()


def test_cli_params_are_recorded_coerced(digits_ckpt, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["explain", str(digits_ckpt), "--indices", "0:2", "-m", "occlusion",
                                 "-p", "incremental=off", "-p", "window=4", "-p", "fill=mean", "-o", str(out),
                                 "--no-png", "-q"])
    assert r.exit_code == 0, r.output
    _, meta = load_npz(out / "attributions.npz")
    assert meta["params"]["occlusion"] == {"window": 4, "stride": 4, "fill": "mean", "incremental": False}


def test_methods_json_lists_each_parameter_declaration():
    r = CliRunner().invoke(app, ["methods", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    for name, row in rows.items():
        assert set(row["params"]) == set(row["defaults"]), name
    assert rows["intgrad"]["params"]["steps"] == {"type": "int", "min": 1, "accepts": "an integer >= 1"}
    assert rows["intgrad"]["params"]["baseline"]["choices"] == ["black", "blurred", "uniform"]
    p = rows["rise"]["params"]["p"]
    assert (p["type"], p["min"], p["min_open"], p["max"], p["accepts"]) == ("float", 0, True, 1, "a number in (0, 1]")
    assert rows["gradcam"]["params"]["layer"]["nullable"] is True
