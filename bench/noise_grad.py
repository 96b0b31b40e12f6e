"""Unit-gradient speed: units x samples per second of `interp noise-grad`'s backward strategies
for all units of a layer at all samples, in one run:

- ``batched``: one forward pass of the S samples, one batched backward pass over the U
  units (vmap over one-hot cotangents, ``is_grads_batched``);
- ``batched-chunked``: the same forward pass, the backward in chunks of the device's default
  rows (128 on the CPU, 4096 elsewhere) — what ``interp noise-grad`` runs by default;
- ``fold``: the units folded into the batch (U x S rows, one forward and one backward);
- ``loop``: one forward and backward pass of the S samples per unit (the baseline).

    python bench/noise_grad.py                               # smp-directional and resnet56, 64 units x 8 samples
    python bench/noise_grad.py --units 64 --samples 32 --device cuda

Reported per arch: rows/s (a row is one (unit, sample) gradient), the speed-up over the
per-unit loop, and the cost against one forward+backward per row: time / (U x S x per-row
time), the per-row time of a forward+backward to the layer at the cheapest of the batch sizes
S, 128 and U x S; < 1 means the shared forward pass saves work.  Modes run in turns.
Models are untrained (speed does not depend on the weights).
Writes JSON (out/bench/noise_grad.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.models import Classifier  # noqa: E402
from interpcli.noisegrad import unit_gradients, unit_values  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
LAYERS = {"smp-directional": "features.conv2", "resnet56": "layer3"}  # 120 and 64 channels


def one_pass(model, x, layer: str, reduce: str):
    """One forward+backward of the whole batch to the layer: the per-row reference."""
    xg = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(unit_values(model, xg, layer, reduce)[:, 0].sum(), xg)
    return g


MODES = {"loop": ("loop", None), "fold": ("fold", "all"), "batched": ("batched", "all"),
         "batched-chunked": ("batched", None)}  # mode -> (grad mode, rows per pass: all, or the device default)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns (after one warm-up each), so that load
    from other processes hits all alike."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_arch(arch: str, units: int, samples: int, repeats: int, dev, reduce: str) -> dict:
    torch.manual_seed(0)
    model = Classifier(arch, 10, (3, 32, 32), {"kind": "normalize", "mean": MEAN, "std": STD}).to(dev).eval()
    layer = LAYERS[arch]
    x = torch.randn(samples, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(dev)
    k = unit_values(model, x[:1], layer, reduce).shape[1]
    sel = list(range(min(units, k)))
    rows = len(sel) * samples
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run(mode, per_pass):
        def fn():
            unit_gradients(model, x, sel, layer, reduce, mode=mode, batch_rows=rows if per_pass == "all" else None)
            sync()
        return fn

    ref = unit_gradients(model, x, sel, layer, reduce, mode="loop")
    for mode in ("batched", "fold"):  # the strategies must agree before they are timed
        got = unit_gradients(model, x, sel, layer, reduce, mode=mode)
        assert torch.allclose(got, ref, atol=1e-5 * float(ref.abs().max())), mode
    # The reference: one forward+backward per row at the cheapest of a few batch sizes.
    sizes = sorted({samples, min(128, rows), rows})
    batches = {b: x.repeat(-(-b // samples), 1, 1, 1)[:b] for b in sizes}
    refs = {f"ref{b}": (lambda b=b: (one_pass(model, batches[b], layer, reduce), sync())) for b in sizes}
    times = interleaved({**{m: run(*MODES[m]) for m in MODES}, **refs}, repeats)
    t_row = min(times[f"ref{b}"] / b for b in sizes)
    out = {"arch": arch, "layer": layer, "units": len(sel), "samples": samples, "rows": rows,
           "per_row_ms": 1e3 * t_row, "per_row_ms_by_batch": {b: 1e3 * times[f"ref{b}"] / b for b in sizes}}
    for mode in MODES:
        t = times[mode]
        out[mode] = {"seconds": t, "rows_per_s": rows / t, "cost_vs_fwd_bwd_per_row": t / (rows * t_row),
                     "speedup_vs_loop": times["loop"] / t}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--reduce", default="max", choices=["max", "mean"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "noise_grad.json")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    configure_backends(dev, args.threads)
    results = [bench_arch(a, args.units, args.samples, args.repeats, dev, args.reduce) for a in args.archs]
    print(f"device {dev}, {torch.get_num_threads()} threads, {args.units} units x {args.samples} samples")
    print(f"{'arch':16s} {'mode':16s} {'rows/s':>9s} {'speed-up':>9s} {'cost/row':>9s}")
    for r in results:
        for mode in MODES:
            m = r[mode]
            print(f"{r['arch']:16s} {mode:16s} {m['rows_per_s']:9.0f} {m['speedup_vs_loop']:8.2f}x "
                  f"{m['cost_vs_fwd_bwd_per_row']:9.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": str(dev), "threads": torch.get_num_threads(), "results": results},
                                   indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
