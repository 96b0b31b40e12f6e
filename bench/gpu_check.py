"""GPU paths against the CPU, side by side in one run, and GPU timings.

    python bench/gpu_check.py --device cuda --data cifar_subset.npz --out gpu_check.json

1. Every registered attribution method on several archs (random init, BatchNorm statistics
   from a few training-mode passes): the map on the GPU against the same map on the CPU
   (relative max error and cosine similarity; TF32 is on, as ``interp`` configures CUDA), and
   the GPU time per image.
2. The ``occlude`` engine's four scores, GPU against CPU.
3. Training on CUDA (bf16 autocast, channels_last) through ``interpcli.train``: images/s and
   test accuracy of resnet20 and its B-cos twin on a CIFAR-10 NPZ (``--data``), so the B-cos
   slowdown is measured on the GPU too.
4. ``interp explain`` end to end on the GPU from the trained checkpoint.

Needs a CUDA device; prints one line per row and writes everything to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interpcli import TrainConfig, attribute, list_methods, load_model, train  # noqa: E402
from interpcli.device import configure_backends  # noqa: E402
from interpcli.methods import get_method  # noqa: E402
from interpcli.models import Classifier, get_model_info  # noqa: E402
from interpcli.occlusion import OccludeConfig, occlude  # noqa: E402

SMALL = {"n_samples": 8, "steps": 16, "n_masks": 256, "views": 8, "k": 2, "n_segments": 16}
ARCHS = ["resnet20", "vgg9", "bcos-resnet20", "smp-directional", "positive-vgg", "protopnet", "lenet"]


def _model(arch: str, device: str) -> Classifier:
    info = get_model_info(arch)
    c = info.default_input[0]
    enc = {"kind": info.encoding} if info.encoding != "normalize" else {
        "kind": "normalize", "mean": [0.5] * c, "std": [0.25] * c}
    torch.manual_seed(0)
    m = Classifier(arch, 10, info.default_input, enc)
    with torch.no_grad():  # BatchNorm running statistics that are not the identity
        m.train()
        for _ in range(3):
            m(torch.rand(16, *info.default_input))
    return m.eval().to(device)


def _compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.double().flatten(1), b.double().flatten(1)
    rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    cos = float(F.cosine_similarity(a, b, dim=1).min())
    return rel, cos


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def methods_rows(dev: str, n: int, archs: list[str]) -> list[dict]:
    rows = []
    for arch in archs:
        cpu, gpu = _model(arch, "cpu"), _model(arch, dev)
        x = torch.rand(n, *cpu.input_shape, generator=torch.Generator().manual_seed(1))
        t = torch.arange(n) % 10
        for name in list_methods():
            info = get_method(name)
            if info.bcos_only and not arch.startswith("bcos"):
                continue
            kw = {k: v for k, v in SMALL.items() if k in info.defaults}
            if name in ("rosa", "osa-das", "gds", "occlusion"):
                kw.update(window=8, stride=8) if name != "occlusion" else kw.update(window=8, stride=4)
            row = {"arch": arch, "method": name}
            try:
                ref = attribute(cpu, x, t, name, **kw)
                attribute(gpu, x[:2].to(dev), t[:2].to(dev), name, **kw)  # warm-up (cuDNN autotuning, caches)
                _sync(dev)
                t0 = time.perf_counter()
                got = attribute(gpu, x.to(dev), t.to(dev), name, **kw)
                _sync(dev)
                row["gpu_ms_per_image"] = (time.perf_counter() - t0) * 1e3 / n
                row["rel_max_err"], row["min_cosine"] = _compare(got.cpu(), ref)
                row["ok"] = bool(torch.isfinite(got).all()) and row["min_cosine"] > 0.99
            except Exception as e:  # noqa: BLE001 - a check reports every failure and goes on
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def occlude_rows(dev: str) -> list[dict]:
    rows = []
    cpu, gpu = _model("resnet20", "cpu"), _model("resnet20", dev)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for score in ("class", "repr", "subspace", "gds"):
        cfg = dict(window=8, stride=4, score=score, views=8, k=2)
        try:
            ref = occlude(cpu, x, OccludeConfig(**cfg), target=1).maps
            _sync(dev)
            t0 = time.perf_counter()
            got = occlude(gpu, x.to(dev), OccludeConfig(**cfg), target=1).maps
            _sync(dev)
            rel, cos = _compare(got, ref)
            row = {"occlude": score, "gpu_ms_per_image": (time.perf_counter() - t0) * 250, "rel_max_err": rel,
                   "min_cosine": cos, "ok": cos > 0.99}
        except Exception as e:  # noqa: BLE001
            row = {"occlude": score, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def train_rows(dev: str, data: str, epochs: int, out: Path) -> list[dict]:
    rows = []
    for arch in ("resnet20", "bcos-resnet20"):
        ckpt = out / f"{arch}.safetensors"
        t0 = time.perf_counter()
        res = train(TrainConfig(arch=arch, dataset=data, epochs=epochs, batch_size=256,
                                lr=0.2 if arch == "resnet20" else 2e-3), out=ckpt, device=dev,
                    force=True)  # a scratch folder: a rerun replaces its checkpoints
        row = {"train": arch, "epochs": epochs, "seconds": time.perf_counter() - t0,
               "images_per_s_last_epoch": res.history[-1]["images_per_s"], "test_acc": res.metrics.get("test_acc")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    a, b = rows
    rows.append({"bcos_slowdown_train": a["images_per_s_last_epoch"] / b["images_per_s_last_epoch"]})
    print(json.dumps(rows[-1]), flush=True)
    model = load_model(out / "resnet20.safetensors", dev)
    x = torch.rand(256, 3, 32, 32, device=dev)
    for compile_ in (False, True):
        try:
            attribute(model, x[:8], 0, "grad", compile=compile_)
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(5):
                attribute(model, x, 0, "grad", compile=compile_)
            _sync(dev)
            row = {"grad_images_per_s": 5 * 256 / (time.perf_counter() - t0), "compile": compile_}
        except Exception as e:  # noqa: BLE001
            row = {"compile": compile_, "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default=None, help="CIFAR-10 NPZ for the training rows (skipped without)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--archs", nargs="*", default=ARCHS)
    ap.add_argument("--work", default="/tmp/gpu_check_runs", help="folder for the trained checkpoints")
    args = ap.parse_args()
    dev = torch.device(args.device)
    configure_backends(dev, tf32=False)  # as the explanation commands run
    out = Path(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    report = {"device": name,
              "torch": torch.__version__, "methods": methods_rows(args.device, args.images, args.archs),
              "occlude": occlude_rows(args.device)}
    out.write_text(json.dumps(report, indent=1))
    if args.data:
        report["train"] = train_rows(args.device, args.data, args.epochs, work)
    out.write_text(json.dumps(report, indent=1))
    bad = [r for r in report["methods"] + report["occlude"] if not r.get("ok")]
    print(f"{len(bad)} of {len(report['methods']) + len(report['occlude'])} rows not ok", flush=True)


if __name__ == "__main__":
    main()
