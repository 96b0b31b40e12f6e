"""Explanation-scoring speed: seconds per image of each fidelity metric, their cost against the
forward-pass minimum, pointing-game mosaics per second, and Quantus on the same model, images
and attributions (values where the definitions coincide, and the speed-up) — in one run.

    python bench/consistency.py                       # resnet56, 32 CIFAR-10 test images, step 16, 20 fractions
    python bench/consistency.py --images 8 --train-steps 0 --no-quantus

Unit: the time of one image's forward pass, measured as a 256-image batch under inference mode
÷ 256.  Minimum of a metric = the images it must push through the model: (steps + 1) per image
for deletion and for insertion, one per kept fraction for consistency / min-size (computed
together).  ratio = time / minimum.  Pointing game: 3 x 3 mosaics (96 x 96) of random test
images; the time covers building the mosaics, the method on every cell (one row per cell) and
the scores.  Quantus (a bench-only extra: ``pip install quantus``): ``PixelFlipping`` with
``features_in_step = 3 * step`` on maps expanded to the three channels with a tiny per-channel
offset (so a step flips whole pixels, in our order) gives our deletion curve without its first
point (substrate black, probabilities); ``RegionPerturbation`` is timed (its regions differ from
pixel flipping); ``Focus`` on 2 x 2 mosaics with one target quadrant is our pointing score of
that cell.  The model is resnet56 briefly trained on real CIFAR-10 when ../shared/data has it.
Writes JSON (out/bench/consistency.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed  # noqa: E402
from occlude import model_and_images  # noqa: E402

from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.methods import attribute  # noqa: E402
from interpcli.metrics.fidelity import FidelityConfig, score_maps  # noqa: E402
from interpcli.metrics.pointing import build_mosaics, pointing_scores  # noqa: E402


def quantus_part(model, x, t, maps, step: int, ours_deletion: np.ndarray, repeats: int, dev) -> dict:
    try:
        import quantus  # noqa: PLC0415 (optional, bench-only)
    except ImportError:
        return {"skipped": "quantus is not installed (pip install quantus)"}
    warnings.filterwarnings("ignore")
    n, _, h, w = x.shape
    sal = maps.sum(1, keepdim=True).cpu().numpy()
    a3 = np.repeat(sal, 3, 1) + np.array([0, -1e-7, -2e-7], np.float32).reshape(1, 3, 1, 1) * np.abs(sal).max()
    xb, yb = x.cpu().numpy(), t.cpu().numpy()
    pf = quantus.PixelFlipping(features_in_step=3 * step, perturb_baseline="black", normalise=False, abs=False,
                               disable_warnings=True, display_progressbar=False)

    def q_pf():
        return np.asarray(pf(model=model, x_batch=xb, y_batch=yb, a_batch=a3, softmax=True, device=str(dev),
                             batch_size=len(xb)))

    q_curve = q_pf()
    rp = quantus.RegionPerturbation(patch_size=4, regions_evaluation=64, perturb_baseline="black", normalise=False,
                                    abs=False, disable_warnings=True, display_progressbar=False)

    def q_rp():
        return rp(model=model, x_batch=xb, y_batch=yb, a_batch=sal, softmax=True, device=str(dev), batch_size=len(xb))

    t_pf, t_rp = timed(q_pf, repeats), timed(q_rp, max(1, repeats // 2))
    # Focus on 2 x 2 mosaics: one target quadrant per mosaic, as our pointing score of that cell
    g = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, n, (n, 4), generator=g)
    mosaics = build_mosaics(x.cpu(), blocks.numpy(), 2)
    cells = torch.randint(0, 4, (len(mosaics),), generator=g)
    targets = t.cpu()[blocks[torch.arange(len(blocks)), cells]]
    m = attribute(model, mosaics.to(dev), targets.to(dev), "grad").sum(1, keepdim=True).cpu()
    ours_cells = torch.zeros(len(m), 4, *m.shape[-2:])
    ours_cells[torch.arange(len(m)), cells] = m[:, 0]
    ours = pointing_scores(ours_cells, 2)[torch.arange(len(m)), cells].numpy()
    quad = {0: (1, 0, 0, 0), 1: (0, 0, 1, 0), 2: (0, 1, 0, 0), 3: (0, 0, 0, 1)}  # cell k (column-major) -> TL,TR,BL,BR
    focus = quantus.Focus(normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    q_focus = np.asarray(focus(model=model, x_batch=mosaics.numpy(), y_batch=targets.numpy(), a_batch=m.numpy(),
                               custom_batch=[quad[int(c)] for c in cells], device=str(dev)))
    t_focus_q = timed(lambda: focus(model=model, x_batch=mosaics.numpy(), y_batch=targets.numpy(), a_batch=m.numpy(),
                                    custom_batch=[quad[int(c)] for c in cells], device=str(dev)), repeats)
    t_focus_ours = timed(lambda: pointing_scores(ours_cells, 2), repeats)
    return {"version": quantus.__version__,
            "pixel_flipping_max_abs_diff_vs_our_deletion": float(np.abs(q_curve - ours_deletion[:, 1:]).max()),
            "pixel_flipping_s_per_image": t_pf / n, "region_perturbation_s_per_image": t_rp / n,
            "focus_max_abs_diff_vs_our_pointing": float(np.abs(q_focus - ours).max()),
            "focus_s_per_mosaic": t_focus_q / len(m), "our_pointing_scores_s_per_mosaic": t_focus_ours / len(m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--step", type=int, default=16)
    ap.add_argument("--fractions", type=int, default=20)
    ap.add_argument("--mosaics", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-quantus", action="store_true")
    ap.add_argument("--out", default="out/bench/consistency.json")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    configure_backends(dev)
    model, x, data = model_and_images(args.images, args.train_steps, dev)
    n, _, h, w = x.shape
    with torch.inference_mode():
        t = model(x).argmax(1)
    maps = attribute(model, x, t, "grad")
    probe = torch.rand(256, 3, h, w, device=dev)

    def fwd():
        with torch.inference_mode():
            model(probe)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    unit = timed(fwd, args.repeats) / 256
    steps = -(-h * w // args.step)
    rows = {}
    for name, metrics, minimum in (("deletion", ("deletion",), steps + 1), ("insertion", ("insertion",), steps + 1),
                                   ("consistency+min-size", ("consistency", "min-size"), args.fractions),
                                   ("all four", ("deletion", "insertion", "consistency", "min-size"),
                                    2 * (steps + 1) + args.fractions)):
        cfg = FidelityConfig(metrics=metrics, step=args.step, fractions=args.fractions, batch_size=args.batch_size)
        sec = timed(lambda c=cfg: score_maps(model, x, t, {"grad": maps}, c), args.repeats)
        rows[name] = {"s_per_image": sec / n, "forwards_min_per_image": minimum,
                      "ratio_to_minimum": sec / (n * minimum * unit)}
    res = score_maps(model, x, t, {"grad": maps}, FidelityConfig(metrics=("deletion",), step=args.step,
                                                                  deletion_fill="black"))
    pointing = {}
    blocks = np.random.default_rng(0).integers(0, n, (args.mosaics, 9))
    for method in ("grad", "gradcam"):
        def run(method=method):
            mos = build_mosaics(x.cpu(), blocks, 3).to(dev)
            rep = mos.repeat_interleave(9, 0)
            cls = t.cpu()[torch.from_numpy(blocks.reshape(-1))].to(dev)
            a = attribute(model, rep, cls, method).sum(1).reshape(len(mos), 9, *rep.shape[-2:])
            return pointing_scores(a.cpu(), 3)

        t0 = time.perf_counter()
        sec = timed(run, args.repeats)
        pointing[method] = {"mosaics_per_s": args.mosaics / sec, "first_call_s": time.perf_counter() - t0}
    out = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "data": data,
           "images": n, "step": args.step, "steps": steps, "fractions": args.fractions,
           "forward_unit_s_per_image": unit, "metrics": rows, "pointing_3x3": pointing}
    if not args.no_quantus:
        q = quantus_part(model, x, t, maps, args.step, res.curves["deletion"]["grad"], args.repeats, dev)
        if "pixel_flipping_s_per_image" in q:
            ours_black = timed(lambda: score_maps(model, x, t, {"grad": maps}, FidelityConfig(
                metrics=("deletion",), step=args.step, deletion_fill="black")), args.repeats) / n
            q["speedup_deletion_vs_pixel_flipping"] = q["pixel_flipping_s_per_image"] / ours_black
            q["speedup_deletion_vs_region_perturbation"] = q["region_perturbation_s_per_image"] / ours_black
        out["quantus"] = q
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
