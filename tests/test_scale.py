"""Whole-dataset runs: chunked (streamed) results, ``--shard I/N`` + ``--merge``, torchrun ranks.

Every chunk is computed the same way whichever process takes it, so a result written in parts,
the merge of its shards and a 2-rank torchrun run all equal one process's run bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from interpcli import Attributions, InputSpec
from interpcli.artifacts import load_npz_meta, save_checkpoint
from interpcli.attribution_store import RowReader, merge_results
from interpcli.attributions import part_files, total_rows
from interpcli.cli import app
from interpcli.dist import parse_shard, shard_range
from interpcli.errors import ConfigError
from interpcli.models import Classifier
from interpcli.ops.consistency import ConsistencyConfig, consistency_checkpoint
from interpcli.ops.explain import Scale, explain_checkpoint

from .conftest import ROOT, shared_npz

DIGITS = ["--dataset", "digits", "--device", "cpu", "-q"]
METHODS = ["-m", "grad", "-m", "smoothgrad", "-m", "rise", "-p", "rise.n_masks=64", "-p", "smoothgrad.n_samples=4"]


def _run(*args):
    # one thread, as the torchrun ranks below: bit-for-bit comparisons need the same reductions
    return CliRunner().invoke(app, [str(a) for a in args], env={"INTERP_THREADS": "1"})


def _same(a: Attributions, b: Attributions, exact: bool = True) -> None:
    """Equal results: bit for bit (the same chunks, whoever computed them), else to float rounding
    (other chunk sizes: the model sees other batch sizes)."""
    assert a.methods == b.methods and a.sources == b.sources and len(a) == len(b)
    eq = torch.equal if exact else (lambda x, y: torch.allclose(x.float(), y.float(), rtol=1e-5, atol=1e-6))
    for m in a.methods:
        assert eq(a.maps[m], b.maps[m]), m
    for name in ("images", "targets", "labels", "logits"):
        assert eq(getattr(a, name), getattr(b, name)), name


def test_shards_are_contiguous_runs_of_whole_chunks():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard expects I/N"):
            parse_shard(bad)
    for n in (1, 2, 3, 7, 10):
        for count in (1, 2, 3, 4):
            slices = [list(shard_range(n, i, count)) for i in range(count)]
            assert sum(slices, []) == list(range(n)) and 0 in slices[0]
            assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_a_chunked_result_equals_one_chunk_and_reads_back(digits_ckpt, tmp_path):
    spec = InputSpec(indices="0:11")
    params = {"rise": {"n_masks": 64}}
    one, _ = explain_checkpoint(digits_ckpt, tmp_path / "one", ["grad", "rise"], inputs=spec, params=params,
                                device="cpu", png=False)
    first, files = explain_checkpoint(digits_ckpt, tmp_path / "parts", ["grad", "rise"], inputs=spec, params=params,
                                      device="cpu", png=False, scale=Scale(chunk=4))
    assert [f.name for f in files] == ["attributions.npz", "attributions-00001.npz", "attributions-00002.npz"]
    assert len(first) == 4 and total_rows(tmp_path / "parts") == 11 == total_rows(tmp_path / "one")
    assert load_npz_meta(files[0])["part"] == {"index": 0, "start": 0, "stop": 4, "parts": 3, "rows": 11}
    whole = Attributions.load(tmp_path / "parts", checkpoint=digits_ckpt)
    _same(whole, one, exact=False)
    _same(Attributions.load(tmp_path / "parts" / "attributions.npz"), whole)  # part 0 by name: the whole result
    assert len(Attributions.load(files[1])) == 4  # another part by name: that part alone
    reader = RowReader(tmp_path / "parts", checkpoint=digits_ckpt)
    assert len(reader) == 11 and reader.methods == ["grad", "rise"]
    _same(reader.rows(3, 9), whole.rows(3, 9))  # across two part boundaries
    # the Python API without an output folder: everything in memory, the same numbers
    mem, none = explain_checkpoint(digits_ckpt, None, ["grad", "rise"], inputs=spec, params=params, device="cpu",
                                   scale=Scale(chunk=4))
    assert none == [] and torch.equal(mem.maps["rise"], whole.maps["rise"])


def test_the_old_single_file_layout_still_loads(digits_ckpt, tmp_path):
    res, _ = explain_checkpoint(digits_ckpt, None, ["grad"], inputs=InputSpec(indices="0:3"), device="cpu")
    res.save(tmp_path / "old", png=False)  # Attributions.save: one NPZ, no part record
    assert "part" not in load_npz_meta(tmp_path / "old" / "attributions.npz")
    assert part_files(tmp_path / "old") == [tmp_path / "old" / "attributions.npz"]
    assert total_rows(tmp_path / "old") == 3 and len(RowReader(tmp_path / "old")) == 3
    _same(Attributions.load(tmp_path / "old"), res)


def test_a_missing_part_is_an_error(digits_ckpt, tmp_path):
    explain_checkpoint(digits_ckpt, tmp_path / "p", ["grad"], inputs=InputSpec(indices="0:6"), device="cpu",
                       png=False, scale=Scale(chunk=2))
    (tmp_path / "p" / "attributions-00001.npz").unlink()
    r = _run("consistency", digits_ckpt, tmp_path / "p", "-o", tmp_path / "c", "-q")
    assert r.exit_code == 2 and "attributions-00001.npz is missing" in r.output
    assert not (tmp_path / "c").exists()


def test_shards_merge_into_the_single_run(digits_ckpt, tmp_path):
    common = [digits_ckpt, *DIGITS, "--indices", "0:10", *METHODS, "--chunk", "4", "--png-rows", "2"]
    assert _run("explain", *common, "-o", tmp_path / "one").exit_code == 0
    for i in range(3):
        r = _run("explain", *common, "--shard", f"{i}/3", "-o", tmp_path / f"s{i}")
        assert r.exit_code == 0, r.output
    assert json.loads(json.dumps(load_npz_meta(tmp_path / "s2" / "attributions.npz")["shard"]))["images"] == [8, 10]
    r = _run("explain", "--merge", tmp_path / "s2", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "all",
             "--png-rows", "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 10
    _same(Attributions.load(tmp_path / "all"), Attributions.load(tmp_path / "one"))  # smoothgrad included
    assert "shard" not in load_npz_meta(tmp_path / "all" / "attributions.npz")
    pngs = sorted(p.name for p in (tmp_path / "all").glob("*.png"))
    assert pngs == sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert pngs == ["0000_grad.png", "0000_rise.png", "0000_smoothgrad.png", "0001_grad.png", "0001_rise.png",
                    "0001_smoothgrad.png", "grid.png"]
    # what cannot be merged: a shard missing, a shard twice, another run's shard, a folder that is not a shard
    for folders, message in (([tmp_path / "s0", tmp_path / "s1"], "missing 2/3"),
                             ([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"], "given twice"),
                             ([tmp_path / "one"], "not the output of a --shard")):
        r = _run("explain", "--merge", *folders, "-o", tmp_path / "bad")
        assert r.exit_code == 2 and message in r.output, r.output
    assert _run("explain", *common, "--seed", "1", "--shard", "2/3", "-o", tmp_path / "other").exit_code == 0
    r = _run("explain", "--merge", tmp_path / "s0", tmp_path / "s1", tmp_path / "other", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "another run" in r.output
    assert not (tmp_path / "bad").exists()
    r = _run("explain", *common, "--shard", "3/4", "--chunk", "8", "-o", tmp_path / "empty")
    assert r.exit_code == 2 and "gets no images" in r.output


def test_png_rows_and_npz_input_of_a_result_in_parts(digits_ckpt, tmp_path):
    r = _run("explain", digits_ckpt, *DIGITS, "--indices", "0:7", "-m", "grad", "--chunk", "3", "--png-rows", "4",
             "-o", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "e").glob("*.png")) == [f"{i:04d}_grad.png" for i in range(4)]
    # an earlier result as --npz input: the images of every part
    r = _run("explain", digits_ckpt, "--npz", tmp_path / "e" / "attributions.npz", "-m", "grad", "--device", "cpu",
             "-q", "--no-png", "-o", tmp_path / "again", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 7
    _same(Attributions.load(tmp_path / "again"), Attributions.load(tmp_path / "e"), exact=False)  # other chunks


def test_consistency_scores_a_result_in_parts_as_one_file(digits_ckpt, tmp_path):
    spec, params = InputSpec(indices="0:9"), {"rise": {"n_masks": 64}}
    explain_checkpoint(digits_ckpt, tmp_path / "parts", ["grad"], inputs=spec, device="cpu", png=False,
                       scale=Scale(chunk=2))
    explain_checkpoint(digits_ckpt, tmp_path / "rise", ["rise"], inputs=spec, params=params, device="cpu", png=False,
                       scale=Scale(chunk=4))  # parts of other sizes than the grad file's
    grad, rise = Attributions.load(tmp_path / "parts"), Attributions.load(tmp_path / "rise")
    grad.maps["rise"], grad.params["rise"], grad.signed["rise"] = rise.maps["rise"], rise.params["rise"], False
    grad.save(tmp_path / "one", png=False)  # the same maps in one file
    cfg = lambda: ConsistencyConfig(n_boot=50)
    a, _ = consistency_checkpoint(digits_ckpt, [tmp_path / "one"], None, cfg(), device="cpu")
    b, _ = consistency_checkpoint(digits_ckpt, [tmp_path / "parts", tmp_path / "rise"], None, cfg(), device="cpu")
    for metric, by in a.fidelity.scores.items():
        for m, v in by.items():
            assert np.array_equal(v, b.fidelity.scores[metric][m]), (metric, m)
    assert a.rows == b.rows


def test_occlude_in_chunks_and_shards(digits_ckpt, tmp_path):
    common = [digits_ckpt, *DIGITS, "--indices", "0:7", "--score", "repr", "--window", "4", "--stride", "4"]
    assert _run("occlude", *common, "-o", tmp_path / "one").exit_code == 0
    for i in range(2):
        r = _run("occlude", *common, "--chunk", "3", "--shard", f"{i}/2", "-o", tmp_path / f"s{i}")
        assert r.exit_code == 0, r.output
    r = _run("occlude", "--merge", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "all", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 7, r.output
    one, merged = Attributions.load(tmp_path / "one"), Attributions.load(tmp_path / "all")
    assert torch.allclose(merged.maps["rosa"], one.maps["rosa"], atol=1e-6)  # other batches: float rounding only
    assert np.allclose(merged.extras["mask_scores"], one.extras["mask_scores"], atol=1e-6)


def test_merge_results_refuses_an_existing_output(digits_ckpt, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(ConfigError):
        merge_results([tmp_path / "nope"], tmp_path / "out")
    assert (tmp_path / "out" / "x").read_text() == "keep"


# ---------------------------------------------------------------------------------------------- torchrun

def _torchrun(*args, nproc=2, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", INTERP_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "interpcli", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_equal_one_process(digits_ckpt, tmp_path):
    common = ["explain", digits_ckpt, *DIGITS, "--indices", "0:10", *METHODS, "--chunk", "3", "--png-rows", "2"]
    assert _run(*common, "-o", tmp_path / "one").exit_code == 0
    r = _torchrun(*common, "-o", tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    _same(Attributions.load(tmp_path / "ddp"), Attributions.load(tmp_path / "one"))
    assert r.stdout.count("attributions.npz") == 1  # only rank 0 reports; the others write nothing final
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    r = _torchrun("occlude", digits_ckpt, *DIGITS, "--indices", "0:5", "--score", "class", "--chunk", "2",
                  "-o", tmp_path / "occ")
    assert r.returncode == 0, r.stderr[-3000:]
    assert total_rows(tmp_path / "occ") == 5


# ---------------------------------------------------------------------------------------------- memory

def _peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory (MiB) of one `interp` run in a child process (resource.getrusage)."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(r.returncode)")
    env = dict(os.environ, INTERP_THREADS="1", INTERP_PROGRESS="0")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / ".venv" / "bin" / "interp"), *args], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    return float(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grad", "rise"])
def test_peak_memory_is_flat_in_the_number_of_images(tmp_path, method):
    data = shared_npz("cifar10")
    torch.manual_seed(0)
    model = Classifier("resnet20", 10, (3, 32, 32), {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3})
    ckpt = save_checkpoint(tmp_path / "r20.safetensors", model.eval())
    extra = ["-p", "rise.n_masks=10"] if method == "rise" else []  # memory does not depend on the masks
    rss = {n: _peak_rss_mb(["explain", str(ckpt), "--dataset", "cifar10", "--data-dir", str(data.parent),
                            "--indices", f"0:{n}", "-m", method, *extra, "--device", "cpu", "-q",
                            "-o", str(tmp_path / f"{method}-{n}")]) for n in (500, 5000)}
    assert rss[5000] <= 1.2 * rss[500], rss
    assert total_rows(tmp_path / f"{method}-5000") == 5000


# ---------------------------------------------------------------------------------------------- noise-grad

NG = ["--samples", "5", "--dataset", "digits", "--indices", "0:12", "--average", "--png-inputs", "6", "--device",
      "cpu", "-q"]


def _scores(folder):
    return json.loads((folder / "scores.json").read_text())


def test_noise_grad_in_parts_and_shards(digits_ckpt, tmp_path):
    assert _run("noise-grad", digits_ckpt, *NG, "-o", tmp_path / "one").exit_code == 0
    r = _run("noise-grad", digits_ckpt, *NG, "--chunk", "4", "-o", tmp_path / "parts", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["inputs"] == 17
    names = sorted(p.name for p in (tmp_path / "parts").iterdir() if not p.name.startswith("."))
    assert names == ["grid.png", *(f"noise_grad-0000{i}.npz" for i in range(1, 5)), "noise_grad.npz", "scores.json"]
    one, parts = _scores(tmp_path / "one"), _scores(tmp_path / "parts")
    for a, b in zip(one["units"], parts["units"]):  # running sums, other batch sizes: float32 rounding
        assert all(a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7) for k in a if k not in ("unit", "name"))
    with np.load(tmp_path / "one" / "noise_grad.npz") as z, np.load(tmp_path / "parts" / "noise_grad.npz") as p:
        assert np.allclose(z["mean_gradient"], p["mean_gradient"], atol=1e-6)  # over every noise sample
        assert np.array_equal(z["gradients"][:, :4], p["gradients"]) and json.loads(str(p["meta"]))["part"][
            "inputs"] == 17
    for i in range(2):
        r = _run("noise-grad", digits_ckpt, *NG, "--chunk", "4", "--shard", f"{i}/2", "-o", tmp_path / f"s{i}")
        assert r.exit_code == 0, r.output
    r = _run("noise-grad", "--merge", tmp_path / "s1", tmp_path / "s0", "-o", tmp_path / "all", "--png-inputs", "6")
    assert r.exit_code == 0, r.output
    for f in sorted((tmp_path / "parts").glob("noise_grad*.npz")):
        with np.load(f) as a, np.load(tmp_path / "all" / f.name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta"), f.name
    assert _scores(tmp_path / "all")["summary"] == pytest.approx(parts["summary"], rel=1e-9)
    r = _run("noise-grad", "--merge", tmp_path / "s0", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "missing 1/2" in r.output


@pytest.mark.slow
def test_noise_grad_and_consistency_under_torchrun(digits_ckpt, tmp_path):
    assert _run("noise-grad", digits_ckpt, *NG, "--chunk", "4", "-o", tmp_path / "one").exit_code == 0
    r = _torchrun("noise-grad", digits_ckpt, *NG, "--chunk", "4", "-o", tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    for f in sorted((tmp_path / "one").glob("noise_grad*.npz")):
        with np.load(f) as a, np.load(tmp_path / "ddp" / f.name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta"), f.name
    assert _scores(tmp_path / "ddp")["summary"] == pytest.approx(_scores(tmp_path / "one")["summary"], rel=1e-9)
    # consistency: the ranks score shares of the 256-row windows, rank 0 gathers them and writes
    assert _run("explain", digits_ckpt, *DIGITS, "--indices", "0:300", "-m", "grad", "--no-png",
                "-o", tmp_path / "g").exit_code == 0
    args = ["consistency", digits_ckpt, tmp_path / "g", "--metric", "deletion,min-size", "--step", "16",
            "--n-boot", "50", "--device", "cpu", "-q", "--no-png"]
    assert _run(*args, "-o", tmp_path / "c1").exit_code == 0
    r = _torchrun(*args, "-o", tmp_path / "c2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "c1" / "scores.csv").read_bytes() == (tmp_path / "c2" / "scores.csv").read_bytes()
    s1, s2 = (json.loads((tmp_path / c / "summary.json").read_text())["summary"] for c in ("c1", "c2"))
    assert s1 == s2


@pytest.mark.slow
def test_sparsify_under_torchrun_equals_one_process(digits_ckpt, tmp_path):
    """The ranks share sparsify's feature extraction (whole batches each), rank 0 gathers the
    features, fits the path and writes: the same path and the same sparse layer as one process."""
    import shutil

    from interpcli.artifacts import load_tensors

    ckpt = tmp_path / "lenet.safetensors"
    shutil.copy(digits_ckpt, ckpt)
    args = ["sparsify", ckpt, "-k", "8", "--batch-size", "200", "--no-cache", "--device", "cpu", "-q"]
    assert _run(*args, "-o", tmp_path / "one").exit_code == 0
    r = _torchrun(*args, "-o", tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("sparse.safetensors") == 1  # rank 0 alone lists its files
    one, ddp = (json.loads((tmp_path / d / "path.json").read_text()) for d in ("one", "ddp"))
    def timeless(points):
        return [{k: v for k, v in p.items() if k != "seconds"} for p in points]

    assert timeless(one["points"]) == timeless(ddp["points"]) and one["selection"] == ddp["selection"]
    a, b = (load_tensors(tmp_path / d / "sparse.safetensors")[0] for d in ("one", "ddp"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob("*.features-*"))  # --no-cache: no cache beside the checkpoint


def test_consistency_shards_merge_to_the_single_run(digits_ckpt, tmp_path):
    """--shard I/N scores a slice of the 256-row windows; --merge joins the rows in order and
    computes the statistics over all of them: the same tables and summary as one run."""
    assert _run("explain", digits_ckpt, *DIGITS, "--indices", "0:300", "-m", "grad", "--no-png",
                "-o", tmp_path / "g").exit_code == 0
    args = ["consistency", digits_ckpt, tmp_path / "g", "--metric", "deletion,min-size", "--step", "16",
            "--n-boot", "50", "--device", "cpu", "-q", "--no-png"]
    assert _run(*args, "-o", tmp_path / "one").exit_code == 0
    for i in range(2):
        r = _run(*args, "--shard", f"{i}/2", "-o", tmp_path / f"s{i}")
        assert r.exit_code == 0, r.output
    rows = [len((tmp_path / f"s{i}" / "scores.csv").read_text().splitlines()) for i in range(2)]
    assert rows[0] > rows[1] > 1  # 256 and 44 images
    r = _run("consistency", "--merge", tmp_path / "s1", tmp_path / "s0", "-o", tmp_path / "all", "-q", "--no-png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "all" / "scores.csv").read_bytes() == (tmp_path / "one" / "scores.csv").read_bytes()
    one, merged = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "all"))
    assert merged["summary"] == one["summary"]
    with np.load(tmp_path / "one" / "curves.npz") as a, np.load(tmp_path / "all" / "curves.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta")
    r = _run("consistency", "--merge", tmp_path / "s0", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "shards missing: 1/2" in r.output
    r = _run("consistency", "--merge", tmp_path / "s0", tmp_path / "s0", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "given twice" in r.output
    r = _run(*args, "--shard", "2/2", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "--shard expects I/N" in r.output
    r = _run(*args, "--shard", "3/4", "-o", tmp_path / "bad")  # 2 windows, 4 slices: slice 3 is empty
    assert r.exit_code == 2 and "has no rows" in r.output
    assert not (tmp_path / "bad").exists()


def test_sparsify_feature_shards_join_to_the_single_run(digits_ckpt, tmp_path):
    """--shard I/N extracts the features of a slice of the batches and stops; --shards joins the
    folders instead of extracting: the same path and sparse layer as one run."""
    import shutil

    from interpcli.artifacts import load_tensors

    ckpt = tmp_path / "lenet.safetensors"
    shutil.copy(digits_ckpt, ckpt)
    args = ["sparsify", ckpt, "-k", "8", "--batch-size", "200", "--device", "cpu", "-q"]
    assert _run(*args, "--no-cache", "-o", tmp_path / "one").exit_code == 0
    for i in range(3):
        r = _run(*args, "--shard", f"{i}/3", "-o", tmp_path / f"f{i}")
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in (tmp_path / f"f{i}").iterdir() if not p.name.startswith(".")) == [
            "features-shard.npz"]
    assert not list(tmp_path.glob("*.features-*"))  # a shard caches nothing
    shards = [a for i in (2, 0, 1) for a in ("--shards", tmp_path / f"f{i}")]
    r = _run(*args, "--no-cache", *shards, "-o", tmp_path / "all")
    assert r.exit_code == 0, r.output
    one, joined = (json.loads((tmp_path / d / "path.json").read_text()) for d in ("one", "all"))
    timeless = lambda points: [{k: v for k, v in p.items() if k != "seconds"} for p in points]  # noqa: E731
    assert timeless(one["points"]) == timeless(joined["points"]) and one["selection"] == joined["selection"]
    a, b = (load_tensors(tmp_path / d / "sparse.safetensors")[0] for d in ("one", "all"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = _run(*args, "--no-cache", "--shards", tmp_path / "f0", "--shards", tmp_path / "f1", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "feature shards missing: 2/3" in r.output
    r = _run(*args, "--shard", "0/2", "--visualize", "2", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "--shard extracts a slice" in r.output
    r = _run(*args, "--batch-size", "100", *shards, "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "another checkpoint, dataset or --batch-size" in r.output
    assert not (tmp_path / "bad").exists()
