"""Training throughput of `interp train` against a plain PyTorch reference loop.

Both sides train the same model (resnet20 by default, on CIFAR-shaped 3x32x32 images)
with the same batch size, optimiser, loss and augmentation (random crop with 4-pixel
reflect padding + horizontal flip).  The reference is the loop most people write: a
torchvision-style per-sample transform inside a `torch.utils.data.DataLoader` over the
same tensors.  Runs alternate (interp, reference, interp, ...) so drift hits both;
the first epoch of every run is a warm-up and is not timed.  Evaluation is excluded on
both sides.  Prints a table and writes JSON (default out/bench/train_throughput.json).

    python bench/train_throughput.py                  # CPU, 2048 images, 3 epochs, 2 repeats
    python bench/train_throughput.py --device cuda --airbench   # + airbench94 to 94% on real CIFAR-10

On a GPU, --airbench also times `interp train --arch airbench94` on ../shared/data/cifar10.npz
until the test accuracy reaches 94% (the airbench94 target; its published time is
3.83 s on an A100 without torch.compile, 2.59 s for airbench94_muon).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from interpcli import TrainConfig, train  # noqa: E402
from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.models import Classifier  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "cifar10.npz"


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    if SHARED.exists():
        with np.load(SHARED, allow_pickle=False) as z:
            return z["x_train"][:n], z["y_train"][:n], "cifar10 (../shared/data)"
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n), "random uint8"


class _Augmented(torch.utils.data.Dataset):
    """Per-sample random crop (reflect pad 4) + flip, then float in [0, 1]: the usual torchvision recipe."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, translate: int):
        from torchvision.transforms import v2

        self.x, self.y = x, y
        self.t = v2.Compose([v2.RandomCrop(32, padding=translate, padding_mode="reflect"), v2.RandomHorizontalFlip(),
                             v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.t(self.x[i]), self.y[i]


def reference_run(arch: str, x: np.ndarray, y: np.ndarray, epochs: int, bs: int, device: torch.device,
                  workers: int, mean: list[float], std: list[float]) -> float:
    torch.manual_seed(0)
    model = Classifier(arch, 10, (3, 32, 32), {"kind": "normalize", "mean": mean, "std": std}).to(device)
    ds = _Augmented(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.astype(np.int64)), 4)
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, drop_last=False,
                                         pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen, t0 = 0, None
    for epoch in range(epochs):
        if epoch == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def interp_run(arch: str, npz: Path, epochs: int, bs: int, device: str, channels_last: bool) -> float:
    cfg = TrainConfig(arch=arch, dataset=str(npz), epochs=epochs, batch_size=bs, lr=0.05, optimizer="sgd",
                      momentum=0.9, weight_decay=5e-4, flip=True, translate=4, channels_last=channels_last)
    res = train(cfg, device=device)
    timed = res.history[1:]
    return sum(r["images_per_s"] * r["seconds"] for r in timed) / sum(r["seconds"] for r in timed)


def airbench_to_94(device: str, max_epochs: int = 12) -> dict:
    """Seconds of `interp train --arch airbench94` on real CIFAR-10 until test accuracy >= 94%."""
    if not SHARED.exists():
        return {"skipped": f"{SHARED} not present"}
    out = {}
    for epochs in range(8, max_epochs + 1, 2):
        res = train(TrainConfig(arch="airbench94", dataset="cifar10", data_dir=str(SHARED.parent), epochs=epochs),
                    device=device)
        out = {"epochs": epochs, "test_acc": res.metrics["test_acc"], "train_seconds": res.metrics["train_seconds"]}
        if res.metrics["test_acc"] >= 0.94:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--n", type=int, default=2048, help="training images")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--airbench", action="store_true", help="also time airbench94 to 94%% (GPU only)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "train_throughput.json")
    args = ap.parse_args()

    device = resolve_device(args.device)
    configure_backends(device)
    x, y, source = cifar_like(args.n)
    xf = x.astype(np.float32) / 255
    mean, std = xf.mean((0, 1, 2)).tolist(), xf.std((0, 1, 2)).tolist()
    results: dict[str, list[float]] = {"interp": [], "interp_no_channels_last": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "bench.npz"
        np.savez(npz, x_train=x, y_train=y.astype(np.int64), x_test=x[:256], y_test=y[:256].astype(np.int64))
        for r in range(args.repeats):
            results["interp"].append(interp_run(args.arch, npz, args.epochs, args.batch_size, str(device), True))
            results["reference"].append(reference_run(args.arch, x, y, args.epochs, args.batch_size, device,
                                                      args.workers, mean, std))
            results["interp_no_channels_last"].append(
                interp_run(args.arch, npz, args.epochs, args.batch_size, str(device), False))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in results.items()),
                  file=sys.stderr)
    med = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "benchmark": "train_throughput", "arch": args.arch, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "data": source, "n": args.n, "epochs_timed": args.epochs - 1,
        "batch_size": args.batch_size, "reference_workers": args.workers, "images_per_s": results,
        "median_images_per_s": med, "ratio_interp_vs_reference": med["interp"] / med["reference"],
        "ratio_interp_no_channels_last_vs_reference": med["interp_no_channels_last"] / med["reference"],
        "target_ratio_cpu": 1.3, "torch": torch.__version__,
    }
    if args.airbench:
        report["airbench94_to_94"] = airbench_to_94(str(device)) if device.type == "cuda" else {
            "skipped": "needs a GPU"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':28s}{'images/s (median)':>18s}")
    for k, v in med.items():
        print(f"{k:28s}{v:18.1f}")
    print(f"ratio interp / reference: {report['ratio_interp_vs_reference']:.2f}x "
          f"(without channels_last {report['ratio_interp_no_channels_last_vs_reference']:.2f}x; target >= 1.3x on CPU)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
