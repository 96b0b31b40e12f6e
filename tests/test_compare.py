"""`interp compare`: statistics checked against formulas written out here, grouping and pairing of
checkpoints and JSON files, the files written, the CLI's output and errors."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as sps
from typer.testing import CliRunner

from interpcli.artifacts import save_checkpoint
from interpcli.cli import app
from interpcli.errors import ConfigError
from interpcli.models import Classifier
from interpcli.ops.compare import CompareConfig, compare_runs
from interpcli.reporting.groupstats import welch_test
from interpcli.reporting.runs import lookup, read_run

# Three groups of runs: A and B share seeds 0..4 (they pair), C has other seeds (it pairs with nothing).
A = [0.912, 0.921, 0.935, 0.927, 0.916]
B = [0.901, 0.906, 0.931, 0.909, 0.899]
C = [0.880, 0.902, 0.874]


def _write(tmp_path, name, arch, seed, acc, fold=0, **extra):
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"arch": arch, "seed": seed, "fold": fold, "accuracy": acc, "loss": 1 - acc, **extra}))
    return p


@pytest.fixture
def runs(tmp_path):
    files = [_write(tmp_path, f"a{i}", "bcos", i, v) for i, v in enumerate(A)]
    files += [_write(tmp_path, f"b{i}", "std", i, v) for i, v in enumerate(B)]
    files += [_write(tmp_path, f"c{i}", "vit", 10 + i, v) for i, v in enumerate(C)]
    return files


# ---------------------------------------------------------------------------------------------- by hand

def _mean(x):
    return sum(x) / len(x)


def _var(x):  # sample variance, ddof 1
    m = _mean(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def _welch_by_hand(a, b):
    na, nb = len(a), len(b)
    qa, qb = _var(a) / na, _var(b) / nb
    se = math.sqrt(qa + qb)
    t = (_mean(a) - _mean(b)) / se
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1))  # Welch-Satterthwaite
    p = 2 * sps.t.sf(abs(t), df)
    sp = math.sqrt(((na - 1) * _var(a) + (nb - 1) * _var(b)) / (na + nb - 2))
    d = (_mean(a) - _mean(b)) / sp
    g = (1 - 3 / (4 * (na + nb) - 9)) * d  # Hedges' small-sample correction
    half = sps.t.ppf(0.975, df) * se
    return {"welch_t": t, "welch_df": df, "p_welch": p, "cohen_d": d, "hedges_g": g,
            "ci_low": _mean(a) - _mean(b) - half, "ci_high": _mean(a) - _mean(b) + half}


def _wilcoxon_exact_by_hand(d):
    """Two-sided exact signed-rank p-value by enumerating every sign pattern (no ties, no zeros)."""
    ranks = {v: r for r, v in enumerate(sorted(abs(x) for x in d), 1)}
    w_plus = sum(ranks[abs(x)] for x in d if x > 0)
    w = min(w_plus, sum(ranks.values()) - w_plus)
    n = len(d)
    count = sum(1 for signs in itertools.product((0, 1), repeat=n)
                if min(s := sum(r for r, k in zip(range(1, n + 1), signs) if k), n * (n + 1) // 2 - s) <= w)
    return w, min(1.0, count / 2**n)


def _holm_by_hand(ps):
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - j) * ps[i]))
        out[i] = running
    return out


def test_statistics_equal_the_formulas(runs):
    res, files = compare_runs(runs, None, CompareConfig(n_boot=2000))
    assert files == [] and list(res.groups) == ["bcos", "std", "vit"]
    st = res.stats["accuracy"]
    for name, x in (("bcos", A), ("std", B), ("vit", C)):
        s = st["summary"][name]
        assert s["n"] == len(x) and s["mean"] == pytest.approx(_mean(x), abs=1e-12)
        assert s["std"] == pytest.approx(math.sqrt(_var(x)), rel=1e-12)
        assert s["min"] == min(x) and s["max"] == max(x)
        assert s["ci_low"] < s["mean"] < s["ci_high"]
    tests = {(t["a"], t["b"]): t for t in st["tests"]}
    assert list(tests) == [("bcos", "std"), ("bcos", "vit"), ("std", "vit")]
    for (ga, gb), t in tests.items():
        x, y = {"bcos": A, "std": B, "vit": C}[ga], {"bcos": A, "std": B, "vit": C}[gb]
        for k, v in _welch_by_hand(x, y).items():
            assert t[k] == pytest.approx(v, rel=1e-9), k
        assert t["mean_diff"] == pytest.approx(_mean(x) - _mean(y), abs=1e-12)
    # A and B pair by seed (fold 0 everywhere): paired t-test and exact Wilcoxon on the differences
    ab = tests[("bcos", "std")]
    d = [a - b for a, b in zip(A, B)]
    sd = math.sqrt(_var(d))
    t_paired = _mean(d) / (sd / math.sqrt(len(d)))
    assert ab["paired_n"] == 5 and ab["paired_on"] == [[i, 0] for i in range(5)]
    assert ab["paired_t"] == pytest.approx(t_paired, rel=1e-9)
    assert ab["p_paired"] == pytest.approx(2 * sps.t.sf(abs(t_paired), len(d) - 1), rel=1e-9)
    assert ab["cohen_dz"] == pytest.approx(_mean(d) / sd, rel=1e-9)
    w, p_w = _wilcoxon_exact_by_hand(d)
    assert ab["wilcoxon_w"] == w and ab["p_wilcoxon"] == pytest.approx(p_w, rel=1e-12)
    # C shares no seed with A or B: no paired test, and the reason says why
    assert tests[("bcos", "vit")]["paired_n"] == 0 and "shared pair key" in tests[("bcos", "vit")]["paired_note"]
    assert math.isnan(tests[("bcos", "vit")]["p_paired"])
    # Holm over the three pairs of groups
    holm = _holm_by_hand([t["p_welch"] for t in tests.values()])
    assert [t["p_welch_holm"] for t in tests.values()] == pytest.approx(holm, rel=1e-12)
    assert ab["p_paired_holm"] == pytest.approx(ab["p_paired"])  # the only finite paired p-value: m = 1


def test_welch_degenerate_inputs_give_nan_not_errors():
    one = welch_test([0.9], [0.8, 0.85])
    assert one["n_a"] == 1 and math.isnan(one["welch_t"]) and one["mean_diff"] == pytest.approx(0.075)
    flat = welch_test([0.9, 0.9], [0.9, 0.9])
    assert math.isnan(flat["welch_t"]) and math.isnan(flat["hedges_g"])
    assert welch_test([1.0, np.nan, 2.0], [1.0, 3.0])["n_a"] == 2  # NaN dropped


def test_a_group_of_one_run_is_summarised_with_nulls_in_json(tmp_path):
    files = [_write(tmp_path, "a0", "a", 0, 0.5), _write(tmp_path, "b0", "b", 0, 0.6),
             _write(tmp_path, "b1", "b", 1, 0.7)]
    res, _ = compare_runs(files)
    st = res.to_dict()["stats"]["accuracy"]
    assert st["summary"]["a"]["std"] is None and st["tests"][0]["p_welch"] is None
    json.dumps(res.to_dict(), allow_nan=False)  # strict JSON


def test_a_pair_key_no_run_has_is_dropped(tmp_path):
    files = []
    for i, (a, b) in enumerate(zip(A[:3], B[:3])):
        for name, v in (("x", a), ("y", b)):
            files.append(tmp_path / f"{name}{i}.json")
            files[-1].write_text(json.dumps({"model": name, "seed": i, "acc": v}))
    res, _ = compare_runs(files, None, CompareConfig(group_by=("model",), n_boot=10))
    assert res.config.pair_by == ["seed"] and list(res.groups) == ["model=x", "model=y"]
    assert res.stats["accuracy"]["tests"][0]["paired_n"] == 3  # "accuracy" falls back to a file's "acc"


# ---------------------------------------------------------------------------------------------- checkpoints

def _ckpt(path, arch, fold, acc, seed=0, lr=0.1):
    torch.manual_seed(fold)
    enc = {"kind": "bcos6"} if arch.startswith("bcos") else {"kind": "identity"}
    model = Classifier(arch, 10, (1, 8, 8) if arch == "lenet" else (3, 32, 32), enc)
    save_checkpoint(path, model, metrics={"test_acc": acc, "loss": 1 - acc},
                    train_config={"arch": arch, "seed": seed, "fold": fold, "folds": 3, "lr": lr},
                    argv=["interp", "train", "--arch", arch, "--fold", str(fold)])
    return path


def test_checkpoints_group_by_arch_and_pair_by_fold(tmp_path):
    (tmp_path / "runs").mkdir()
    accs = {"lenet": [0.81, 0.84, 0.80], "bcos-lenet": [0.78, 0.80, 0.79]}
    for arch, values in accs.items():
        for fold, v in enumerate(values):
            _ckpt(tmp_path / "runs" / f"{arch}-f{fold}.safetensors", arch, fold, v, lr=0.1 if fold else 0.05)
    (tmp_path / "runs" / "lenet-f0.state.safetensors").write_bytes(b"not a run")  # a training state: left out
    res, _ = compare_runs([tmp_path / "runs"], None, CompareConfig(metrics=("accuracy", "loss"), n_boot=500))
    assert set(res.groups) == {"lenet", "bcos-lenet"} and len(res.runs) == 6
    t = res.stats["accuracy"]["tests"][0]
    a, b = (accs[t["a"]], accs[t["b"]])
    assert t["paired_n"] == 3 and t["paired_on"] == [[0, 0], [0, 1], [0, 2]]
    assert t["paired_mean_diff"] == pytest.approx(_mean(a) - _mean(b))
    assert res.stats["loss"]["summary"]["lenet"]["mean"] == pytest.approx(1 - _mean(accs["lenet"]))
    # any recorded key groups: the learning rate, from train_config
    by_lr, _ = compare_runs([tmp_path / "runs"], None, CompareConfig(group_by=("lr",), pair_by=(), n_boot=10))
    assert set(by_lr.groups) == {"lr=0.05", "lr=0.1"} and by_lr.stats["accuracy"]["tests"][0]["paired_n"] == 0
    # an arch option not given at training is the arch's default: lenet's bias is True
    by_bias, _ = compare_runs(sorted((tmp_path / "runs").glob("lenet-f?.safetensors")), None,
                              CompareConfig(group_by=("bias",), n_boot=10))
    assert list(by_bias.groups) == ["bias=True"]
    # an eval result names its checkpoint: its own accuracy, the checkpoint's arch, seed and fold
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"checkpoint": str(tmp_path / "runs" / "lenet-f1.safetensors"), "accuracy": 0.5, "n": 8}))
    rec = read_run(ev)
    assert lookup(rec.fields, "accuracy") == 0.5 and lookup(rec.fields, "arch") == "lenet"
    assert lookup(rec.fields, "fold") == 1 and lookup(rec.fields, "test_acc") == 0.84


def test_cli_json_files_and_table(runs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", *map(str, runs), "--metric", "accuracy,loss", "-o", str(out), "--n-boot", "500",
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["files"] == [str(out / n) for n in ("compare.json", "compare.csv", "violin.png")]
    assert doc["metrics"] == ["accuracy", "loss"] and set(doc["groups"]) == {"bcos", "std", "vit"}
    assert json.loads((out / "compare.json").read_text())["stats"] == doc["stats"]
    assert "Welch" in r.stderr and "bcos − std" in r.stderr
    lines = (out / "compare.csv").read_text().splitlines()
    assert lines[0] == "group,run,kind,seed,fold,metric,value,sha256" and len(lines) == 1 + 2 * len(runs)
    with Image.open(out / "violin.png") as im:
        assert im.size[0] > 300 and len(np.unique(np.asarray(im.convert("L")))) > 10
    # explicit groups by glob, no RUN arguments; quiet: stdout only
    r = runner.invoke(app, ["compare", "--group", f"mine={tmp_path}/a*.json", "--group", f"theirs={tmp_path}/b*.json",
                            "--pair-by", "none", "-q", "--json", "--n-boot", "100"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert list(doc["groups"]) == ["mine", "theirs"] and doc["stats"]["accuracy"]["tests"][0]["paired_n"] == 0
    assert r.stderr == ""


def test_metric_all_and_errors(runs, tmp_path):
    res, _ = compare_runs(runs, None, CompareConfig(metrics=("all",), n_boot=10))
    assert res.metrics == ["accuracy", "loss"]  # seed and fold pair runs: not metrics
    with pytest.raises(ConfigError, match=r"has no metric 'val_acc'; its numbers: .*accuracy"):
        compare_runs(runs, None, CompareConfig(metrics=("val_acc",)))
    runner = CliRunner()
    cases = [(["compare", str(runs[0]), "-m", "nope"], "has no metric 'nope'"),
             (["compare", str(tmp_path / "missing.json")], "run not found"),
             (["compare", str(tmp_path)], "holds no checkpoint"),
             (["compare", *map(str, runs), "--group", "x=nomatch*"], "matches no file"),
             (["compare", *map(str, runs), "--group", f"x={tmp_path}/a*"], "matches no --group pattern"),
             (["compare", *map(str, runs), "--group-by", "optimizer"], "has no 'optimizer' to group by"),
             (["compare", *map(str, runs), "--level", "1.5"], "--level must be in (0, 1)")]
    for args, needle in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: ")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = runner.invoke(app, ["compare", str(bad)])
    assert r.exit_code == 2 and "not an object" in r.stderr


def test_files_beside_a_checkpoint_are_not_runs():
    from interpcli.reporting.runs import is_run_checkpoint

    assert is_run_checkpoint("r20.safetensors")
    assert not is_run_checkpoint("r20.state.safetensors")
    assert not is_run_checkpoint("r20.features-0123abcd.safetensors")  # sparsify's feature cache
