"""Explanation-scoring speed: seconds per image of each fidelity metric, their cost against the
forward-pass minimum, pointing-game mosaics per second, and Quantus on the same model, images
and attributions (values where the definitions coincide, and the speed-up) — in one run.

    python bench/consistency.py                       # resnet56, 32 CIFAR-10 test images, step 16, 20 fractions
    python bench/consistency.py --images 8 --train-steps 0 --no-quantus

Minimum of a metric = the images it must push through the model: (steps + 1) per image for
deletion and for insertion, one per kept fraction for consistency / min-size (computed
together); ratio = the metric's time / the time of that many plain forwards (inference mode,
batches of --batch-size), the two run alternately so that load from other processes hits both.
Pointing game: 3 x 3 mosaics (96 x 96) of random test
images; the time covers building the mosaics, the method on every cell (one row per cell) and
the scores.  Quantus (a bench-only extra: ``pip install quantus``) flips single channel
entries, so it is compared on a one-channel resnet56 (grey images), where a step is whole
pixels: ``PixelFlipping`` (``features_in_step = step``, black) gives our deletion curve without
its first point; ``RegionPerturbation`` (4 x 4 patches, as many regions as our steps) is timed;
``Focus`` on 2 x 2 mosaics with one target quadrant is our pointing score of that cell.
The model is resnet56 briefly trained on real CIFAR-10 when ../shared/data has it.
Writes JSON (out/bench/consistency.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import timed, timed_pair  # noqa: E402
from occlude import model_and_images  # noqa: E402

from interpcli.device import configure_backends, resolve_device  # noqa: E402
from interpcli.methods import attribute  # noqa: E402
from interpcli.metrics.fidelity import FidelityConfig, score_maps  # noqa: E402
from interpcli.metrics.pointing import build_mosaics, pointing_scores  # noqa: E402
from interpcli.models import Classifier  # noqa: E402


def quantus_part(x, step: int, repeats: int, batch_size: int, dev) -> dict:
    """Quantus against ours on a one-channel resnet56 (Quantus flips single channel entries, so
    on RGB a step never covers whole pixels): same model, images, maps and number of forwards."""
    try:
        import quantus  # noqa: PLC0415 (optional, bench-only)
    except ImportError:
        return {"skipped": "quantus is not installed (pip install quantus)"}
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = Classifier("resnet56", 10, (1, *x.shape[-2:]), {"kind": "normalize", "mean": [0.48], "std": [0.24]})
    model = model.to(dev).eval()
    g = x.mean(1, keepdim=True)
    with torch.inference_mode():
        t = model(g).argmax(1)
    maps = attribute(model, g, t, "grad")
    n, _, h, w = g.shape
    cfg = FidelityConfig(metrics=("deletion",), step=step, deletion_fill="black", batch_size=batch_size)
    ours = score_maps(model, g, t, {"grad": maps}, cfg).curves["deletion"]["grad"]
    xb, yb, ab = g.cpu().numpy(), t.cpu().numpy(), maps.cpu().numpy()
    # Quantus's "black" is each image's minimum; 0.0 is our black
    pf = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0, normalise=False, abs=False,
                               disable_warnings=True, display_progressbar=False)
    rp = quantus.RegionPerturbation(patch_size=4, regions_evaluation=h * w // step, perturb_baseline=0.0,
                                    normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    kw = dict(model=model, x_batch=xb, y_batch=yb, a_batch=ab, softmax=True, device=str(dev), batch_size=n)
    q_curve = np.asarray(pf(**kw))
    run_ours = lambda: score_maps(model, g, t, {"grad": maps}, cfg)  # noqa: E731
    a, b = timed_pair(run_ours, lambda: pf(**kw), repeats)  # alternately: load hits both alike
    t_ours, t_pf = statistics.median(a), statistics.median(b)
    a, b = timed_pair(run_ours, lambda: rp(**kw), repeats)
    t_ours2, t_rp = statistics.median(a), statistics.median(b)
    # Focus on 2 x 2 mosaics, one target quadrant each = our pointing score of that cell
    gen = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, n, (n, 4), generator=gen)
    mosaics = build_mosaics(g.cpu(), blocks.numpy(), 2)
    cells = torch.randint(0, 4, (len(mosaics),), generator=gen)
    targets = t.cpu()[blocks[torch.arange(len(blocks)), cells]]
    m = attribute(model, mosaics.to(dev), targets.to(dev), "grad").cpu()
    per_cell = torch.zeros(len(m), 4, *m.shape[-2:])
    per_cell[torch.arange(len(m)), cells] = m[:, 0]
    mine = pointing_scores(per_cell, 2)[torch.arange(len(m)), cells].numpy()
    quad = {0: (1, 0, 0, 0), 1: (0, 0, 1, 0), 2: (0, 1, 0, 0), 3: (0, 0, 0, 1)}  # cell k (column-major) -> TL,TR,BL,BR
    focus = quantus.Focus(normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    fkw = dict(model=model, x_batch=mosaics.numpy(), y_batch=targets.numpy(), a_batch=m.numpy(),
               custom_batch=[quad[int(c)] for c in cells], device=str(dev))
    q_focus = np.asarray(focus(**fkw))
    return {"version": quantus.__version__, "model": "resnet56, 1 channel (grey images), untrained",
            "pixel_flipping_max_abs_diff_vs_our_deletion_curve": float(np.abs(q_curve - ours[:, 1:]).max()),
            "ours_deletion_s_per_image": t_ours / n, "pixel_flipping_s_per_image": t_pf / n,
            "region_perturbation_s_per_image": t_rp / n, "speedup_vs_pixel_flipping": t_pf / t_ours,
            "speedup_vs_region_perturbation": t_rp / t_ours2,
            "focus_max_abs_diff_vs_our_pointing": float(np.abs(q_focus - mine).max()),
            "focus_s_per_mosaic": timed(lambda: focus(**fkw), repeats) / len(m),
            "our_pointing_scores_s_per_mosaic": timed(lambda: pointing_scores(per_cell, 2), repeats) / len(m)}


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
    bs = args.batch_size
    probe = torch.rand(bs, 3, h, w, device=dev)

    def forwards(k: int):
        """k images through the model in batches of ``bs``: the floor of a metric that needs k forwards."""
        def run():
            with torch.inference_mode():
                for i in range(0, k, bs):
                    model(probe[: min(bs, k - i)])
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return run

    unit = timed(forwards(bs), args.repeats) / bs
    steps = -(-h * w // args.step)
    rows = {}
    for name, metrics, minimum in (("deletion", ("deletion",), steps + 1), ("insertion", ("insertion",), steps + 1),
                                   ("consistency+min-size", ("consistency", "min-size"), args.fractions),
                                   ("all four", ("deletion", "insertion", "consistency", "min-size"),
                                    2 * (steps + 1) + args.fractions)):
        cfg = FidelityConfig(metrics=metrics, step=args.step, fractions=args.fractions, batch_size=bs)
        ta, tb = timed_pair(lambda c=cfg: score_maps(model, x, t, {"grad": maps}, c), forwards(n * minimum),
                            args.repeats)
        rows[name] = {"s_per_image": statistics.median(ta) / n, "forwards_min_per_image": minimum,
                      "ratio_to_minimum": statistics.median(ta) / statistics.median(tb)}
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
        out["quantus"] = quantus_part(x, args.step, args.repeats, args.batch_size, dev)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
