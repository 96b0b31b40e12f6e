"""Whole-dataset runs on the CPU: peak memory and throughput of `interp explain` as the number of
images grows, and the speed-up of two torchrun ranks.

Each run is one `interp explain` command in a child process, as a user runs it (CIFAR-10 test
images from --data-dir, default chunk of 256 images, PNGs of the first 64 rows), timed end to
end; its peak resident memory is the child's ``ru_maxrss`` (for torchrun: the largest rank's).

    python bench/scale.py                                 # grad and rise over 500 / 2,000 / 5,000 images, 2 ranks
    python bench/scale.py --sizes 500 5000 --methods grad --ranks 0
    python bench/scale.py --checkpoint runs/r20.safetensors
    python bench/scale.py --sizes 500 5000 --methods --ranks 0 --commands occlude consistency

The model is a randomly initialised ResNet-20 unless --checkpoint is given (time and memory do
not depend on the weights).  RISE runs with --rise-masks masks (default 20, not the method's
6,000: the cost is linear in the masks and 6,000 would take hours per size on a CPU).

Reported per run: ``seconds`` (wall, with start-up: importing torch, reading CIFAR-10), ``cpu_s``
(user + system CPU seconds of the process tree: far less sensitive than wall time to other
processes on a shared machine), ``peak_rss_mb``, ``images_per_s`` = images / seconds,
``images_per_cpu_s`` and ``marginal_*`` = the extra images over the extra (CPU) seconds from the
previous size (start-up and the 64 PNGs cancel out: the steady throughput).  ``startup_s``
is the wall time of an 8-image run.  torchrun: the same command under ``torchrun --standalone
--nproc_per_node=N`` at the largest size (grad) and the middle size (rise), speed-up = one
process's seconds / N ranks' seconds, each process with --threads torch threads.  The machine's
load average before and after each run is recorded: on a shared machine every number is noisy.
Writes JSON (default out/bench/scale.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from interpcli.artifacts import save_checkpoint  # noqa: E402
from interpcli.attributions import total_rows  # noqa: E402
from interpcli.models import Classifier  # noqa: E402

_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(time.perf_counter() - t, u.ru_maxrss / 1024, u.ru_utime + u.ru_stime); sys.exit(r.returncode)")


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def measure(cmd: list[str], threads: int) -> dict:
    """Wall seconds and peak RSS (MiB, largest process) of ``cmd`` in a child process."""
    env = dict(os.environ, INTERP_THREADS=str(threads), OMP_NUM_THREADS=str(threads), INTERP_PROGRESS="0",
               PYTHONPATH=str(ROOT))
    before = _load()
    r = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    seconds, rss, cpu = map(float, r.stdout.strip().splitlines()[-1].split())
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1), "load_before": before,
            "load_after": _load()}


def explain_cmd(interp: list[str], ckpt: Path, data_dir: str, n: int, method: str, rise_masks: int,
                out: Path) -> list[str]:
    extra = ["-p", f"rise.n_masks={rise_masks}"] if method == "rise" else []
    return [*interp, "explain", str(ckpt), "--dataset", "cifar10", "--data-dir", data_dir, "--indices", f"0:{n}",
            "-m", method, *extra, "--device", "cpu", "-q", "-o", str(out)]


def other_cmd(interp: list[str], command: str, ckpt: Path, data_dir: str, n: int, out: Path, maps: Path) -> list[str]:
    """``occlude`` (class score, 16x16 windows, stride 16: 4 masks per image) or ``consistency``
    (deletion and insertion, 256 pixels a step, on the grad maps ``maps`` of the same images)."""
    if command == "occlude":
        return [*interp, "occlude", str(ckpt), "--dataset", "cifar10", "--data-dir", data_dir, "--indices",
                f"0:{n}", "--score", "class", "--window", "16", "--stride", "16", "--device", "cpu", "-q",
                "-o", str(out)]
    return [*interp, "consistency", str(ckpt), str(maps), "--data-dir", data_dir, "--metric", "deletion,insertion",
            "--step", "256", "--n-boot", "100", "--device", "cpu", "-q", "--no-png", "-o", str(out)]


def other_commands(args, interp: list[str], ckpt: Path, tmp: Path, result: dict) -> None:
    """Peak memory and CPU time of the other streamed commands at each size (``--commands``)."""
    for command in args.commands:
        for n in args.sizes:
            maps = tmp / f"maps-{n}"
            if command == "consistency" and not maps.exists():
                measure(explain_cmd(interp, ckpt, args.data_dir, n, "grad", args.rise_masks, maps), args.threads)
            out = tmp / f"{command}-{n}"
            row = {"command": command, "images": n,
                   **measure(other_cmd(interp, command, ckpt, args.data_dir, n, out, maps), args.threads)}
            row["images_per_cpu_s"] = round(n / row["cpu_s"], 1)
            result["commands"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000])
    ap.add_argument("--methods", nargs="*", default=["grad", "rise"])
    ap.add_argument("--rise-masks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process ($INTERP_THREADS)")
    ap.add_argument("--ranks", type=int, default=2, help="torchrun processes for the speed-up (0: skip it)")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--commands", nargs="*", default=[], choices=["occlude", "consistency"],
                    help="also measure these streamed commands at each size (peak RSS, CPU time)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "scale.json")
    args = ap.parse_args()
    interp = [sys.executable, "-m", "interpcli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
                "-m", "interpcli"]
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
              "threads": args.threads, "rise_masks": args.rise_masks, "runs": [], "torchrun": [], "commands": []}
    with tempfile.TemporaryDirectory(prefix="interp-scale-") as tmpdir:
        tmp = Path(tmpdir)
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            model = Classifier("resnet20", 10, (3, 32, 32),
                               {"kind": "normalize", "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]})
            ckpt = save_checkpoint(tmp / "resnet20-random.safetensors", model.eval())
        result["checkpoint"] = str(args.checkpoint or "resnet20, random init")
        for method in args.methods:
            base = measure(explain_cmd(interp, ckpt, args.data_dir, 8, method, args.rise_masks,
                                       tmp / f"warm-{method}"), args.threads)
            prev = None
            for n in args.sizes:
                out = tmp / f"{method}-{n}"
                row = {"method": method, "images": n, "startup_s": base["seconds"], "startup_cpu_s": base["cpu_s"],
                       **measure(explain_cmd(interp, ckpt, args.data_dir, n, method, args.rise_masks, out),
                                 args.threads)}
                assert total_rows(out) == n
                row["parts"] = len(list(out.glob("attributions*.npz")))
                row["images_per_s"] = round(n / row["seconds"], 1)
                row["images_per_cpu_s"] = round(n / row["cpu_s"], 1)
                if prev is not None and row["seconds"] > prev["seconds"]:
                    row["marginal_images_per_s"] = round((n - prev["images"]) / (row["seconds"] - prev["seconds"]), 1)
                if prev is not None and row["cpu_s"] > prev["cpu_s"]:
                    row["marginal_images_per_cpu_s"] = round((n - prev["images"]) / (row["cpu_s"] - prev["cpu_s"]), 1)
                result["runs"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                prev = row
                for f in out.iterdir():
                    f.unlink()
        other_commands(args, interp, ckpt, tmp, result)
        if args.ranks > 1:
            for method, n in (("grad", args.sizes[-1]), ("rise", args.sizes[len(args.sizes) // 2])):
                if method not in args.methods:
                    continue
                one = next(r for r in result["runs"] if r["method"] == method and r["images"] == n)
                out = tmp / f"ddp-{method}-{n}"
                row = {"method": method, "images": n, "ranks": args.ranks,
                       **measure(explain_cmd(torchrun, ckpt, args.data_dir, n, method, args.rise_masks, out),
                                 args.threads)}
                assert total_rows(out) == n
                row["one_process_s"] = one["seconds"]
                row["speedup"] = round(one["seconds"] / row["seconds"], 2)
                result["torchrun"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'method':8} {'images':>7} {'seconds':>8} {'img/s':>7} {'marginal':>9} {'CPU s':>7} {'img/CPU s':>9} "
          f"{'marginal':>9} {'peak RSS MiB':>13} {'parts':>6}")
    for r in result["runs"]:
        print(f"{r['method']:8} {r['images']:>7} {r['seconds']:>8} {r['images_per_s']:>7} "
              f"{r.get('marginal_images_per_s', '-'):>9} {r['cpu_s']:>7} {r['images_per_cpu_s']:>9} "
              f"{r.get('marginal_images_per_cpu_s', '-'):>9} {r['peak_rss_mb']:>13} {r['parts']:>6}")
    for r in result["torchrun"]:
        print(f"torchrun {r['ranks']} ranks, {r['method']} x {r['images']}: {r['seconds']} s vs {r['one_process_s']} s "
              f"(speed-up {r['speedup']}x), peak RSS per rank {r['peak_rss_mb']} MiB")
    for r in result["commands"]:
        print(f"{r['command']:12} {r['images']:>7} images: {r['seconds']} s, {r['cpu_s']} CPU s "
              f"({r['images_per_cpu_s']} img/CPU s), peak RSS {r['peak_rss_mb']} MiB")
    print(f"(written to {args.out}; machine load average before/after each run is in the JSON)")


if __name__ == "__main__":
    main()
