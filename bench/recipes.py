"""Wall time of every recipe in recipes/ at a budget (default BUDGET=small) on the CPU.

Each recipe runs from scratch into its own fresh folder, as a user would run it:

    make -f recipes/NAME.mk BUDGET=small INTERP=.venv/bin/interp OUT=<tmp>/NAME DEVICE=cpu DATA=../shared/data

one after the other, and the script records its wall time, exit status, whether it wrote the
report and summary.md it promises, and the machine's load before and after (a shared machine
slows everything down).  Prints a table and writes JSON (default out/bench/recipes.json).

    python bench/recipes.py                                 # every recipe, BUDGET=small
    python bench/recipes.py demo pulses-kernels            # some of them
    python bench/recipes.py --budget tiny --threads 1       # what tests/test_recipes.py runs
    python bench/recipes.py --jobs 2 --threads 1            # make -j2, one torch thread per command
    python bench/recipes.py --keep out/recipes              # keep the outputs (reports, summaries)

--threads sets $INTERP_THREADS (torch's CPU threads per `interp` command); --jobs is make's -j.
On a 2-core machine where another process keeps one core busy, two torch threads per command
run an order of magnitude slower than one (the threads wait on each other), so say which
setting a number was measured with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def run_recipe(recipe: Path, out: Path, *, budget: str, interp: str, data: str, jobs: int, threads: int | None,
               device: str, log: Path) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["INTERP_THREADS"] = str(threads)
    cmd = ["make", "--no-print-directory", f"-j{jobs}", "-f", str(recipe), f"BUDGET={budget}", f"INTERP={interp}",
           f"OUT={out}", f"DEVICE={device}", f"DATA={data}"]
    load_before = _load()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    promises = "summary.md" in recipe.read_text()
    return {
        "recipe": recipe.stem, "budget": budget, "seconds": round(seconds, 1), "rc": rc,
        "report": (out / "report" / "index.html").is_file() if promises else None,
        "summary": (out / "summary.md").is_file() if promises else None,
        "load_before": load_before, "load_after": _load(), "command": " ".join(cmd), "log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="recipes to run (file stems; default: all of recipes/*.mk)")
    ap.add_argument("--budget", default="small", choices=["tiny", "small", "paper"])
    ap.add_argument("--interp", default=str(Path(sys.executable).with_name("interp")))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="make -j")
    ap.add_argument("--threads", type=int, default=None, help="$INTERP_THREADS (default: unset, torch's own)")
    ap.add_argument("--keep", type=Path, default=None, help="write the outputs here instead of a temporary folder")
    ap.add_argument("--json", type=Path, default=ROOT / "out" / "bench" / "recipes.json")
    args = ap.parse_args(argv)

    if shutil.which("make") is None:
        print("Error: GNU make is not installed", file=sys.stderr)
        return 2
    recipes = sorted(r for r in RECIPES.glob("*.mk") if r.name != "common.mk")  # common.mk: included by each
    if args.names:
        known = {r.stem: r for r in recipes}
        missing = [n for n in args.names if n.removesuffix(".mk") not in known]
        if missing:
            print(f"Error: no recipe {', '.join(missing)} (have: {', '.join(known)})", file=sys.stderr)
            return 2
        recipes = [known[n.removesuffix(".mk")] for n in args.names]

    base = args.keep or Path(tempfile.mkdtemp(prefix="interp-recipes-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for recipe in recipes:
            out = base / recipe.stem
            if out.exists():
                shutil.rmtree(out)
            print(f"{recipe.stem}: BUDGET={args.budget} ...", file=sys.stderr, flush=True)
            row = run_recipe(recipe, out, budget=args.budget, interp=args.interp, data=args.data, jobs=args.jobs,
                             threads=args.threads, device=args.device, log=base / f"{recipe.stem}.log")
            rows.append(row)
            print(f"{recipe.stem}: {row['seconds']:.0f} s, rc {row['rc']}", file=sys.stderr, flush=True)
            if row["rc"] != 0:  # the end of its log, which a temporary folder would take with it
                print("".join((base / f"{recipe.stem}.log").read_text().splitlines(True)[-30:]), file=sys.stderr)
    finally:
        if args.keep is None:
            for row in rows:  # the logs are all that is left of a temporary run: keep them beside the JSON
                row["log"] = None
            shutil.rmtree(base, ignore_errors=True)

    width = max([len(r["recipe"]) for r in rows] + [6])
    print(f"{'recipe':<{width}}  budget  seconds  rc  report  summary")
    for r in rows:
        print(f"{r['recipe']:<{width}}  {r['budget']:<6}  {r['seconds']:>7.1f}  {r['rc']:>2}  {str(r['report']):<6}  "
              f"{r['summary']}")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "budget": args.budget, "jobs": args.jobs, "threads": args.threads, "device": args.device,
              "data": args.data, "data_has_cifar10": (Path(args.data) / "cifar10.npz").is_file(), "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(args.json)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
