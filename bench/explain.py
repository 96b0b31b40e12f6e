"""Attribution speed: images/s of every method, its cost in forward-equivalents, its ratio to
the method's pass-count minimum, and the same method called directly in Captum (and
pytorch-grad-cam for Grad-CAM / Grad-CAM++), in one run.

    python bench/explain.py                                   # resnet56 + bcos-resnet56, CPU, batch 16
    python bench/explain.py --archs resnet56 --methods grad intgrad gradcam --batch-size 64

Units, measured on the same model and inputs: F = one batched forward pass (inference
mode), FB = one batched forward + backward to the input (no weight gradients), both of the
model the methods run on (the eval fast path's copy; F_plain / FB_plain of the model as loaded).
The pass-count minimum of a method is
FB for grad/ixg/gradcam/bcos, n·FB for smoothgrad/vargrad (n samples) and intgrad (n
steps), and (perturbations/batch)·F for perturbation methods.  ratio = time / minimum.
Methods run on the eval fast path (attribute's default); ``--fastpath`` also times each
with ``fast=False``, alternating runs: speedup_fastpath = time without / time with.
Writes JSON (default out/bench/explain.json).

The sweep a new user's settings must survive (issue 15): ``--batch-sizes 16 32 64 --weights
random trained --methods grad smoothgrad intgrad occlusion --vs-captum-only`` times each
method against the same Captum call, alternating (``timed_pair``), in every (batch, weights)
cell; ``trained`` loads ``--trained ARCH=CKPT`` or trains ARCH for one epoch on 5,000
CIFAR-10 images (../shared/data) once, cached under out/bench/.  On a shared machine use
``--threads 1 --clock process`` (CPU time of this process: other processes' load does not count).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed, timed_pair, use_clock, write_report  # noqa: E402

from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.methods import attribute, get_method, list_methods  # noqa: E402
from interpcli.models import Classifier, get_model_info  # noqa: E402


def _value(text: str):
    """A --param value: JSON (numbers, true, ...) or else the bare string (``segmentation=grid``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def minimum_passes(name: str, params: dict, size: tuple[int, int]) -> tuple[float, str] | None:
    """(count, unit) of the method's pass-count minimum for one batch, or None if unknown."""
    if name in ("grad", "ixg", "gradcam", "gradcam++", "bcos", "guided-backprop"):
        return 1, "FB"
    if name == "deeplift":  # the input and its baseline both go forward and backward
        return 2, "FB"
    if name in ("smoothgrad", "vargrad"):
        return params["n_samples"], "FB"
    if name == "intgrad":
        return params["steps"], "FB"
    if name == "rise":  # K perturbations of each of the batch's images = K batched forwards
        return params["n_masks"], "F"
    if name == "occlusion":
        per_axis = [math.ceil((s - params["window"]) / params["stride"]) + 1 for s in size]
        return per_axis[0] * per_axis[1], "F"
    if name in ("lime", "kernelshap"):
        return params["n_samples"], "F"
    return None


def grad_cam_reference(name: str, model, x, t):
    """Grad-CAM / Grad-CAM++ called directly in pytorch-grad-cam (None if absent or another method)."""
    if name not in ("gradcam", "gradcam++"):
        return None
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None
    cls = pgc.GradCAM if name == "gradcam" else pgc.GradCAMPlusPlus
    targets = [ClassifierOutputTarget(int(c)) for c in t]

    def run():
        with cls(model=model, target_layers=[model.layer(model.target_layer)]) as cam:
            return cam(input_tensor=x, targets=targets)

    return run


def captum_reference(name: str, model, x, t, params):
    """The same method called directly in Captum (None where Captum has no equivalent)."""
    import captum.attr as ca

    if name == "grad":
        return lambda: ca.Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=False)
    if name == "ixg":
        return lambda: ca.InputXGradient(model).attribute(x.clone().requires_grad_(), target=t)
    if name == "intgrad":
        return lambda: ca.IntegratedGradients(model).attribute(x.clone().requires_grad_(), target=t,
                                                               n_steps=params["steps"], method="gausslegendre",
                                                               internal_batch_size=512)
    if name == "smoothgrad":
        return lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=params["n_samples"],
            stdevs=params["sigma"], target=t, abs=False)
    if name == "vargrad":
        return lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x.clone().requires_grad_(), nt_type="vargrad", nt_samples=params["n_samples"],
            stdevs=params["sigma"], target=t, abs=False)
    if name == "deeplift":
        return lambda: ca.DeepLift(model).attribute(x.clone().requires_grad_(), baselines=torch.zeros_like(x), target=t)
    if name == "guided-backprop":
        return lambda: ca.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t)
    if name == "occlusion":
        w, st = params["window"], params["stride"]
        return lambda: ca.Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], w, w),
                                                     strides=(x.shape[1], st, st), baselines=params["fill"],
                                                     target=t, perturbations_per_eval=16)
    if name == "gradcam":
        layer = model.layer(model.target_layer)
        return lambda: ca.LayerAttribution.interpolate(
            ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True), x.shape[-2:], "bilinear")
    if name in ("lime", "kernelshap"):  # Captum fits one surrogate per example, in a Python loop
        from captum._utils.models.linear_model import SkLearnRidge

        from interpcli.methods.surrogate import fill_image, lime_weights
        from interpcli.segments import superpixels

        labels = superpixels(x, params["n_segments"], params["segmentation"], params["compactness"])
        mask = labels[:, None].expand_as(x)  # the same superpixels as ours
        base = fill_image(x, labels, params["fill"])
        base = base.expand_as(x) if torch.is_tensor(base) else base
        fwd = (lambda inp: model(inp).softmax(1)) if params["score"] == "prob" else model
        ppe = min(params["n_samples"], 256)  # our default chunk of perturbed images per forward
        if name == "kernelshap":
            return lambda: ca.KernelShap(fwd).attribute(x, baselines=base, target=t, feature_mask=mask,
                                                        n_samples=params["n_samples"], perturbations_per_eval=ppe)

        def similarity(_orig, _pert, interp, **_kw):  # lime's kernel on the interpretable vector
            m = torch.tensor([interp.shape[-1]])
            return lime_weights(interp[:, None].double().cpu(), m, params["kernel_width"]).float().flatten()

        return lambda: ca.Lime(fwd, interpretable_model=SkLearnRidge(alpha=params["alpha"]),
                               similarity_func=similarity).attribute(
            x, baselines=base, target=t, feature_mask=mask, n_samples=params["n_samples"], perturbations_per_eval=ppe)
    return None


def trained_model(arch: str, device, given: dict[str, str]):
    """The arch with trained weights: ``given[arch]`` (a checkpoint), or one epoch on 5,000
    CIFAR-10 training images, trained once and cached under out/bench/."""
    from interpcli import TrainConfig, load_model, train

    path = Path(given[arch]) if arch in given else ROOT / "out" / "bench" / f"trained-{arch}.safetensors"
    if not path.exists():
        data = ROOT.parent / "shared" / "data"
        if not (data / "cifar10.npz").exists():
            raise SystemExit(f"no checkpoint for {arch}: pass --trained {arch}=CKPT or put cifar10.npz in {data}")
        print(f"training {arch} for the 'trained' cells (one epoch, 5,000 images) -> {path}", flush=True)
        train(TrainConfig(arch=arch, dataset="cifar10", data_dir=str(data), limit_train=5000, limit_test=500,
                          epochs=1, seed=0), out=path, device="cpu", force=True)
    return load_model(path, device=device).eval()


def sweep(args, device) -> dict:
    """Ours against the same Captum call, alternating, in every (weights, batch) cell."""
    given = dict(a.split("=", 1) for a in args.trained)
    overrides = {k: _value(v) for k, v in (p.split("=", 1) for p in args.param)}
    cells = []
    for arch in args.archs:
        info = get_model_info(arch)
        for weights in args.weights:
            torch.manual_seed(0)
            if weights == "trained":
                model = trained_model(arch, device, given)
            else:
                model = Classifier(arch, 10, info.default_input,
                                   {"kind": "bcos6" if info.encoding == "bcos6" else "identity"}).to(device).eval()
            for bs in args.batch_sizes:
                x = torch.rand(bs, *model.input_shape, generator=torch.Generator().manual_seed(1)).to(device)
                t = torch.arange(bs, device=device) % model.num_classes
                for name in args.methods or ["grad", "smoothgrad", "intgrad", "occlusion"]:
                    mi = get_method(name)
                    params = {**mi.defaults, **{k: v for k, v in overrides.items() if k in mi.defaults}}
                    kw = {k: v for k, v in params.items() if k in overrides}
                    ref = captum_reference(name, model, x, t, params)
                    if ref is None:
                        continue
                    ours, theirs = timed_pair(lambda: attribute(model, x, t, name, **kw), ref, args.repeats)
                    cell = {"arch": arch, "weights": weights, "batch_size": bs, "method": name,
                            "seconds": statistics.median(ours), "captum_seconds": statistics.median(theirs),
                            "speedup_vs_captum": statistics.median(theirs) / statistics.median(ours),
                            "speedup_vs_captum_min": min(theirs) / min(ours)}
                    cells.append(cell)
                    print(f"{arch:14s} {weights:8s} batch {bs:3d} {name:12s} ours {cell['seconds']:7.3f}s  "
                          f"captum {cell['captum_seconds']:7.3f}s  {cell['speedup_vs_captum']:.2f}x "
                          f"(min-based {cell['speedup_vs_captum_min']:.2f}x)", flush=True)
    worst = min(cells, key=lambda c: c["speedup_vs_captum"]) if cells else None
    if worst:
        print(f"slowest cell: {worst['method']} {worst['weights']} batch {worst['batch_size']}: "
              f"{worst['speedup_vs_captum']:.2f}x Captum", flush=True)
    return {"cells": cells, "min_speedup_vs_captum": worst["speedup_vs_captum"] if worst else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=["resnet56", "bcos-resnet56"])
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--param", nargs="*", default=["steps=16", "n_samples=8", "n_masks=256"],
                    help="KEY=VALUE overrides for every method that has KEY (keeps CPU runs short)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fastpath", action="store_true",
                    help="also time each method with fast=False (runs alternating): speedup_fastpath")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "explain.json")
    ap.add_argument("--batch-sizes", nargs="*", type=int, default=None,
                    help="sweep these batch sizes (with --weights): ours vs Captum in every cell")
    ap.add_argument("--weights", nargs="*", choices=["random", "trained"], default=["random"],
                    help="with --batch-sizes: random-init and/or trained weights")
    ap.add_argument("--trained", nargs="*", default=[], metavar="ARCH=CKPT",
                    help="checkpoints for the 'trained' cells (default: train one epoch on 5,000 CIFAR-10 images)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall time, or this process's CPU time (with --threads 1 on a shared machine)")
    ap.add_argument("--tf32", action="store_true",
                    help="CUDA: TF32 for ours, the references and the pass-count units alike (default: full float32)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    configure_backends(device, threads=args.threads, tf32=args.tf32)  # references and units: the same precision
    use_clock(args.clock)
    if args.batch_sizes:
        report = {"benchmark": "explain-sweep", "device": str(device), "threads": torch.get_num_threads(),
                  "clock": args.clock, "torch": torch.__version__, **sweep(args, device)}
        write_report(args.out, report)
        return
    overrides = {k: _value(v) for k, v in (p.split("=", 1) for p in args.param)}
    report = {"benchmark": "explain", "device": str(device), "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "torch": torch.__version__, "fastpath_compared": args.fastpath,
              "tf32": args.tf32,
              "results": {}}
    for arch in args.archs:
        info = get_model_info(arch)
        torch.manual_seed(0)
        model = Classifier(arch, 10, info.default_input, {"kind": "bcos6" if info.encoding == "bcos6" else "identity"})
        model = model.to(device).eval()
        x = torch.rand(args.batch_size, *info.default_input, device=device)
        t = torch.arange(args.batch_size, device=device) % 10

        from interpcli.fastpath import fast_model

        def fwd(m):
            with torch.inference_mode():
                m(x)

        def fwdbwd(m):  # input gradient only, as attribution methods need (no weight gradients)
            xx = x.clone().requires_grad_()
            torch.autograd.grad(m(xx)[:, 0].sum(), xx)

        # Units of the model the methods run on (the fast path's copy), and of the plain model.
        fast = fast_model(model)
        unit = {"F": timed(lambda: fwd(fast), args.repeats), "FB": timed(lambda: fwdbwd(fast), args.repeats),
                "F_plain": timed(lambda: fwd(model), args.repeats),
                "FB_plain": timed(lambda: fwdbwd(model), args.repeats)}
        rows = {}
        for name in args.methods or list_methods():
            mi = get_method(name)
            if mi.bcos_only and info.family != "bcos":
                continue
            params = {**mi.defaults, **{k: v for k, v in overrides.items() if k in mi.defaults}}
            kw = {k: v for k, v in params.items() if k in overrides}
            if args.fastpath:  # median of alternating runs; the min-based ratio is kept as a check on noise
                tf, tn = timed_pair(lambda: attribute(model, x, t, name, tf32=args.tf32, **kw),
                                    lambda: attribute(model, x, t, name, fast=False, tf32=args.tf32, **kw),
                                    max(args.repeats, 3))
                sec = statistics.median(tf)
                fp = {"seconds_no_fastpath": statistics.median(tn), "speedup_fastpath": statistics.median(tn) / sec,
                      "speedup_fastpath_min": min(tn) / min(tf)}
            else:
                sec, fp = timed(lambda: attribute(model, x, t, name, tf32=args.tf32, **kw), args.repeats), {}
            row = {"seconds": sec, "images_per_s": args.batch_size / sec, "forward_equivalents": sec / unit["F"],
                   "params": params, **fp}
            mp = minimum_passes(name, params, tuple(x.shape[-2:]))
            if mp:
                row["minimum_seconds"] = mp[0] * unit[mp[1]]
                row["ratio_to_minimum"] = sec / row["minimum_seconds"]
            ref = captum_reference(name, model, x, t, params)
            if ref is not None:
                rsec = timed(ref, args.repeats)
                row["captum_seconds"] = rsec
                row["speedup_vs_captum"] = rsec / sec
            ref = grad_cam_reference(name, model, x, t)
            if ref is not None:
                rsec = timed(ref, args.repeats)
                row["pytorch_grad_cam_seconds"] = rsec
                row["speedup_vs_pytorch_grad_cam"] = rsec / sec
            rows[name] = row
            extra = f"  vs captum {row['speedup_vs_captum']:.2f}x" if "speedup_vs_captum" in row else ""
            if "speedup_vs_pytorch_grad_cam" in row:
                extra += f"  vs pytorch-grad-cam {row['speedup_vs_pytorch_grad_cam']:.2f}x"
            ratio = f"  {row['ratio_to_minimum']:.2f}x of minimum" if "ratio_to_minimum" in row else ""
            if fp:
                plain_ips = args.batch_size / fp['seconds_no_fastpath']
                extra += (f"  fastpath {row['speedup_fastpath']:.2f}x ({plain_ips:.1f}"
                          f" img/s without; min-based {fp['speedup_fastpath_min']:.2f}x)")
            print(f"{arch:14s} {name:16s} {row['images_per_s']:9.1f} img/s  "
                  f"{row['forward_equivalents']:7.1f} F{ratio}{extra}",
                  flush=True)
        report["results"][arch] = {"unit_seconds": unit, "methods": rows}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
