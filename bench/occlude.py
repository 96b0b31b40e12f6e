"""Occlusion engine speed: time per image of the class, repr, subspace and gds scores, their
cost against the pass-count minimum, Captum's Occlusion for the class score, and the
gradient-pruned variant's speed-up and rank correlation with the full map — in one run.

    python bench/occlude.py                       # resnet56, CIFAR-10 test images, window 8 stride 4, 16 views
    python bench/occlude.py --images 4 --train-steps 0 --views 8

Unit: the time of one image's forward pass, measured as a 256-image batch under inference
mode ÷ 256.  Minimum of a score = the number of images it must push through the model
(masks x views, plus references and GDS sets) x that unit.  The model is resnet56, briefly
trained on real CIFAR-10 when ../shared/data/cifar10.npz is there (so maps have structure),
random CIFAR-like noise and an untrained model otherwise.  Writes JSON (out/bench/occlude.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed, write_report  # noqa: E402

from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.models import Classifier  # noqa: E402
from interpcli.occlusion import OccludeConfig, occlude  # noqa: E402
from interpcli.perturb import sliding_boxes  # noqa: E402

CIFAR = ROOT.parent / "shared" / "data" / "cifar10.npz"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def model_and_images(n: int, steps: int, device) -> tuple[torch.nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    model = Classifier("resnet56", 10, (3, 32, 32), {"kind": "normalize", "mean": MEAN, "std": STD}).to(device)
    if not CIFAR.exists():
        return model.eval(), torch.rand(n, 3, 32, 32, device=device), "random images, untrained"
    z = np.load(CIFAR, allow_pickle=False)
    xtr = torch.from_numpy(z["x_train"][: steps * 128]).permute(0, 3, 1, 2).float() / 255
    ytr = torch.from_numpy(z["y_train"][: steps * 128])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for i in range(steps):
        xb, yb = xtr[i * 128 : (i + 1) * 128].to(device), ytr[i * 128 : (i + 1) * 128].to(device)
        xb = torch.where(torch.rand(len(xb), 1, 1, 1, device=device) < 0.5, xb.flip(-1), xb)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xte = torch.from_numpy(z["x_test"][:n]).permute(0, 3, 1, 2).float().to(device) / 255
    with torch.no_grad():
        acc = float((model(torch.from_numpy(z["x_test"][:1000]).permute(0, 3, 1, 2).float().to(device) / 255)
                     .argmax(1).cpu() == torch.from_numpy(z["y_test"][:1000])).float().mean())
    return model, xte, f"CIFAR-10 test images; resnet56 after {steps} SGD steps of 128 (test acc {acc:.3f} on 1000)"


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prune", type=float, nargs="*", default=[0.5, 0.25])
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--scores", nargs="*", default=None, help="subset of class repr subspace gds gds-subspace")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "occlude.json")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    configure_backends(dev)
    model, x, what = model_and_images(args.images, args.train_steps, dev)
    n = len(x)
    K = len(sliding_boxes(32, 32, args.window, args.stride))
    A = args.views
    big = torch.rand(256, 3, 32, 32, device=dev)

    def fwd():
        with torch.inference_mode():
            model(big)

    unit = timed(fwd, 3) / 256
    target = torch.zeros(n, dtype=torch.long, device=dev)
    with torch.inference_mode():
        target = model(x).argmax(1)
    base = dict(window=args.window, stride=args.stride, views=A, k=args.k)
    cases = {  # score -> (config, images through the model per explained image)
        "class": (OccludeConfig(score="class", **base), K + 1),
        "repr": (OccludeConfig(score="repr", **base), K + 1),
        "subspace": (OccludeConfig(score="subspace", **base), (K + 1) * A),
        "gds": (OccludeConfig(score="gds", **base), K + 1 + 4 * A),
        "gds-subspace": (OccludeConfig(score="gds", gds_mode="subspace", **base), (K + 1) * A + 4 * A),
    }
    report = {"benchmark": "occlude", "device": str(dev), "threads": torch.get_num_threads(),
              "torch": torch.__version__,
              "model": what, "images": n, "masks_per_image": K, "views": A, "k": args.k,
              "unit_forward_seconds_per_image": unit, "results": {}}
    print(f"{what}; {K} windows, {A} views, k={args.k}; one image forward = {unit * 1e3:.3f} ms", flush=True)
    for name, (cfg, passes) in cases.items():
        if args.scores and name not in args.scores:
            continue
        maps = {}

        def run(c=cfg):
            maps["full"] = occlude(model, x, c, target=target).maps

        sec = timed(run, args.repeats) / n
        row = {"seconds_per_image": sec, "forward_passes_per_image": passes, "minimum_seconds": passes * unit,
               "ratio_to_minimum": sec / (passes * unit)}
        if name == "class":
            from captum.attr import Occlusion

            occ = Occlusion(model)

            def ref():
                return occ.attribute(x, sliding_window_shapes=(3, args.window, args.window),
                                     strides=(3, args.stride, args.stride), baselines=0.0, target=target,
                                     perturbations_per_eval=64)

            rsec = timed(ref, args.repeats) / n
            row["captum_seconds_per_image"] = rsec
            row["speedup_vs_captum"] = rsec / sec
            row["max_abs_diff_vs_captum"] = float((ref()[:, :1] - maps["full"]).abs().max())
        for q in args.prune:
            pcfg = OccludeConfig(**{**cfg.__dict__, "grad_prune": q})
            pm = {}

            def prun(c=pcfg):
                pm["m"] = occlude(model, x, c, target=target).maps

            psec = timed(prun, args.repeats) / n
            rho = statistics.mean(spearman(a, b) for a, b in zip(maps["full"], pm["m"]))
            row[f"prune_{q}"] = {"seconds_per_image": psec, "speedup": sec / psec, "spearman_vs_full": rho}
        report["results"][name] = row
        prune = "  ".join(f"prune {q}: {row[f'prune_{q}']['speedup']:.2f}x "
                          f"rho {row[f'prune_{q}']['spearman_vs_full']:.3f}"
                          for q in args.prune)
        cap = f"  vs captum {row['speedup_vs_captum']:.2f}x" if "speedup_vs_captum" in row else ""
        print(f"{name:13s} {sec * 1e3:9.1f} ms/img  {row['ratio_to_minimum']:.2f}x of minimum "
              f"({passes} passes){cap}  {prune}",
              flush=True)
    write_report(args.out, report)


if __name__ == "__main__":
    main()
