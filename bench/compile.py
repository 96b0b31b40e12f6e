"""`interp train --compile` on the CPU: for one arch of every family, the training step eager
and under ``torch.compile`` (the same call as ``ops/train.py``), the compile time, and the number
of steps after which compiling has paid for itself.

    python bench/compile.py                       # CPU, batch 64, one thread, CPU time
    python bench/compile.py --archs resnet20 bcos-resnet20 --threads 2 --clock wall

Each arch: one eager step to warm up, then ``--steps`` eager steps (median), then the compiled
model's first step (compile + run) and ``--steps`` compiled steps (median).  compile_seconds =
first compiled step - median compiled step; break_even_steps = compile_seconds / (eager - compiled)
(infinite when compiling does not make steps faster).  Writes JSON (default out/bench/compile.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import write_report  # noqa: E402

from interpcli.device import configure_backends, prefers_channels_last  # noqa: E402
from interpcli.models import Classifier, get_model_info  # noqa: E402

FAMILIES = ["resnet20", "bcos-resnet20", "smp-directional", "positive-vgg", "pulse-cnn", "lenet", "protopnet"]


def measure(name: str, batch: int, steps: int, clock) -> dict:
    info = get_model_info(name)
    torch.manual_seed(0)
    enc = {"kind": info.encoding} if info.encoding != "normalize" else {"kind": "identity"}
    fmt = torch.channels_last if prefers_channels_last(torch.device("cpu"), info.family) else torch.contiguous_format
    model = Classifier(name, 10, info.default_input, enc).to(memory_format=fmt)
    x = torch.rand(batch, *info.default_input)
    x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)

    def step(fwd) -> float:
        t0 = clock()
        loss = F.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return clock() - t0

    step(model)
    eager = statistics.median(step(model) for _ in range(steps))
    compiled_fwd = torch.compile(model)
    first = step(compiled_fwd)
    compiled = statistics.median(step(compiled_fwd) for _ in range(steps))
    gain = eager - compiled
    compile_s = first - compiled
    return {"eager_step_s": eager, "compiled_step_s": compiled, "speedup": eager / compiled,
            "compile_seconds": compile_s, "break_even_steps": compile_s / gain if gain > 0 else float("inf"),
            "family": info.family}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=FAMILIES)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "process"], default="process")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "compile.json")
    args = ap.parse_args()
    configure_backends(torch.device("cpu"), threads=args.threads)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    rows = {}
    for name in args.archs:
        try:
            r = measure(name, args.batch_size, args.steps, clock)
        except Exception as e:  # noqa: BLE001 - a compile failure is a result too
            rows[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            print(f"{name:16s} compile failed: {rows[name]['error']}", flush=True)
            continue
        rows[name] = r
        print(f"{name:16s} eager {r['eager_step_s'] * 1000:8.1f} ms  compiled {r['compiled_step_s'] * 1000:8.1f} ms  "
              f"speed-up {r['speedup']:.2f}x  compile {r['compile_seconds']:.1f} s  "
              f"pays off after {r['break_even_steps']:.0f} steps", flush=True)
    report = {"benchmark": "compile", "device": "cpu", "threads": torch.get_num_threads(), "clock": args.clock,
              "batch_size": args.batch_size, "torch": torch.__version__, "results": rows}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
