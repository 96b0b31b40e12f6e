"""Forward+backward throughput of every architecture, and each interpretable arch against its
standard twin (the B-cos overhead ratio), measured side by side in one run.

    python bench/models.py                 # CPU, batch 64, every registered arch
    python bench/models.py --archs bcos-resnet20 resnet20 --device cuda

Each measurement is the median of ``--repeats`` timings of ``--steps`` training steps
(Adam, cross-entropy) after one warm-up step; arch and twin are timed alternately so
drift hits both.  Writes JSON (default out/bench/models.json).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import write_report  # noqa: E402

from interpcli.device import configure_backends, prefers_channels_last, resolve_device  # noqa: E402
from interpcli.models import Classifier, bcos_layers, get_model_info, list_models  # noqa: E402

TWINS = {"bcos-resnet20": "resnet20", "bcos-resnet56": "resnet56", "bcos-vgg9": "vgg9", "bcos-lenet": "lenet",
         "positive-lenet": "lenet"}


@contextlib.contextmanager
def unfused():
    """The B-cos MaxOut + scale as plain autograd ops (before the fused node): the reference."""
    bcos_layers.FUSED = False
    try:
        yield
    finally:
        bcos_layers.FUSED = True


CLOCK = time.perf_counter  # --clock process: the process's CPU time (robust on a shared machine with --threads 1)


def images_per_s(name: str, device: torch.device, batch: int, steps: int, kwargs: dict | None = None) -> float:
    info = get_model_info(name)
    torch.manual_seed(0)
    enc = {"kind": info.encoding} if info.encoding != "normalize" else {"kind": "identity"}
    fmt = torch.channels_last if prefers_channels_last(device, info.family) else torch.contiguous_format
    model = Classifier(name, 10, info.default_input, enc, arch_kwargs=kwargs or {}).to(device).to(memory_format=fmt)
    x = torch.rand(batch, *info.default_input, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = CLOCK()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (CLOCK() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall time, or the process's CPU time (use with --threads 1 on a shared machine)")
    ap.add_argument("--no-variants", dest="variants", action="store_false",
                    help="skip the B-cos MaxOut-1 and unfused (composed ops) measurements")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "models.json")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "process":
        if args.device != "cpu":
            ap.error("--clock process measures the CPU only")
        CLOCK = time.process_time
    device = resolve_device(args.device)
    configure_backends(device, threads=args.threads)
    archs = args.archs or [a for a in list_models() if a != "pulse-cnn-paper"]
    rows = {}
    for name in archs:
        twin = TWINS.get(name)
        times: dict[str, list[float]] = {name: []} | ({twin: []} if twin else {})
        for _ in range(args.repeats):
            for a in times:
                times[a].append(images_per_s(a, device, args.batch_size, args.steps))
        med = {a: statistics.median(v) for a, v in times.items()}
        row = {"images_per_s": med[name], "input": list(get_model_info(name).default_input)}
        if twin:
            row |= {"twin": twin, "twin_images_per_s": med[twin], "slowdown_vs_twin": med[twin] / med[name]}
        if twin and name.startswith("bcos") and args.variants:  # MaxOut 1, and the composed ops, side by side
            v = {"max_out1": [], "unfused": [], "twin": []}
            for _ in range(args.repeats):
                v["max_out1"].append(images_per_s(name, device, args.batch_size, args.steps, {"max_out": 1}))
                with unfused():
                    v["unfused"].append(images_per_s(name, device, args.batch_size, args.steps))
                v["twin"].append(images_per_s(twin, device, args.batch_size, args.steps))
            mv = {k: statistics.median(x) for k, x in v.items()}
            row |= {"max_out1_images_per_s": mv["max_out1"], "slowdown_max_out1_vs_twin": mv["twin"] / mv["max_out1"],
                    "unfused_images_per_s": mv["unfused"], "slowdown_unfused_vs_twin": mv["twin"] / mv["unfused"],
                    "fusion_speedup": med[name] / mv["unfused"] * mv["twin"] / med[twin]}
        rows[name] = row
        extra = f"   twin {twin}: {med[twin]:8.1f} img/s   slowdown {row['slowdown_vs_twin']:.2f}x" if twin else ""
        if "max_out1_images_per_s" in row:
            extra += (f"   max_out 1: {row['slowdown_max_out1_vs_twin']:.2f}x   unfused: "
                      f"{row['slowdown_unfused_vs_twin']:.2f}x")
        print(f"{name:18s} {med[name]:8.1f} img/s{extra}", flush=True)
    report = {"benchmark": "models", "device": str(device), "threads": torch.get_num_threads(), "clock": args.clock,
              "batch_size": args.batch_size, "torch": torch.__version__, "results": rows}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
