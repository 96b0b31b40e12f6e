"""Occlusion with and without incremental inference (Krypton, https://arxiv.org/abs/1803.04113),
side by side in one run: seconds per image, speed-up, max abs difference, conv FLOP saving.

    python bench/occlusion_incremental.py                      # vgg9 + resnet20, 224x224, CPU
    python bench/occlusion_incremental.py --archs vgg9 --configs 16:8 --max-positions 64

Random weights (seed 0; BatchNorm statistics from a few train-mode passes on random images),
one random 224x224 RGB image, fill 0, batch 32 occluded images per pass for both paths, the
same model object for both (the eval fast path of ``attribute``).  Where a
configuration has more window positions than ``--max-positions`` (the full map would take
minutes on a CPU), both paths are timed on the same evenly spread ``--subset`` of positions and the
time per image is extrapolated: plain = per-position time x positions; incremental = clean
pass + per-position time x positions.  Otherwise the full maps are computed both ways through
``attribute(..., "occlusion", incremental=True/False)`` and compared.  FLOPs are the
convolutions' multiply-adds.  Writes JSON (default out/bench/occlusion_incremental.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import write_report  # noqa: E402

from interpcli.fastpath import fast_model  # noqa: E402
from interpcli.incremental import get_plan, incremental_occlusion_scores  # noqa: E402
from interpcli.methods import attribute  # noqa: E402
from interpcli.models import Classifier  # noqa: E402
from interpcli.perturb import MaskSet, masked_scores, occlusion_positions, sliding_boxes, target_score  # noqa: E402


def make_model(arch: str, size: int) -> Classifier:
    torch.manual_seed(0)
    m = Classifier(arch, 10, (3, size, size), {"kind": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3})
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(2, 3, size, size))
    return m.eval()


_NO_FAST = {"fast": False}  # the timed model already is the fast-path copy: no second one inside attribute()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="*", default=["vgg9", "resnet20"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--configs", nargs="*", default=["16:8", "32:16"], help="WINDOW:STRIDE")
    ap.add_argument("--max-positions", type=int, default=169, help="full maps up to this many window positions")
    ap.add_argument("--subset", type=int, default=64, help="positions timed where there are more")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "occlusion_incremental.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s, bs = args.size, args.batch_size
    report = {"benchmark": "occlusion_incremental", "device": "cpu", "threads": torch.get_num_threads(),
              "size": s, "batch_size": bs, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "load_average_start": os.getloadavg()[0], "results": []}
    torch.manual_seed(1)
    x = torch.rand(1, 3, s, s)
    target = 3
    score = target_score(torch.tensor([target]))
    for arch in args.archs:
        model = make_model(arch, s)
        run = fast_model(model)
        plan = get_plan(run)
        with torch.inference_mode():  # warm-up (and oneDNN primitives of the full-size forward)
            run(x)
        for cfg in args.configs:
            window, stride = (int(v) for v in cfg.split(":"))
            ys, xs = occlusion_positions(s, s, window, stride)
            positions = [(y, x0) for y in ys for x0 in xs]
            k = len(positions)
            sub = k > args.max_positions
            idx = torch.linspace(0, k - 1, args.subset).round().long().tolist() if sub else list(range(k))
            pos = [positions[i] for i in idx]
            # warm-up of both paths (oneDNN creates its kernels on the first call with each shape)
            masks_all = MaskSet.from_boxes((s, s), sliding_boxes(s, s, window, stride)).all()
            masked_scores(run, x, masks_all[idx[:bs]], 0.0, score, batch_size=bs)
            incremental_occlusion_scores(run, x, pos, window, 0.0, target, bs)
            t_base, _ = timed(lambda: plan.base_values(x))
            row = {"arch": arch, "window": window, "stride": stride, "positions": k, "timed_positions": len(pos),
                   "fast_path_model": True}
            if sub:
                t_plain, ref = timed(lambda: masked_scores(run, x, masks_all[idx], 0.0, score, batch_size=bs)[0])
                plan.stats.__init__()
                t_inc, got = timed(lambda: incremental_occlusion_scores(run, x, pos, window, 0.0, target, bs))
                per_pos_inc = max(t_inc - t_base, 0.0) / len(pos)
                row.update(plain_s_per_image=t_plain / len(pos) * k, incremental_s_per_image=t_base + per_pos_inc * k,
                           extrapolated=True, max_abs_diff_scores=float((got - ref).abs().max()),
                           max_abs_scores=float(ref.abs().max()))
            else:
                t_plain, ref = timed(lambda: attribute(run, x, target, "occlusion", batch_size=bs, window=window,
                                                       stride=stride, fill=0.0, incremental=False, **_NO_FAST))
                plan.stats.__init__()
                t_inc, got = timed(lambda: attribute(run, x, target, "occlusion", batch_size=bs, window=window,
                                                     stride=stride, fill=0.0, incremental=True, **_NO_FAST))
                row.update(plain_s_per_image=t_plain, incremental_s_per_image=t_inc, extrapolated=False,
                           max_abs_diff_map=float((got - ref).abs().max()), max_abs_map=float(ref.abs().max()))
            st = plan.stats.as_dict()
            f_one = st["macs_full"] / len(pos)  # conv MACs of one forward pass
            inc_one = st["macs_incremental"] / len(pos)
            row.update(clean_pass_s=t_base, speedup=row["plain_s_per_image"] / row["incremental_s_per_image"],
                       conv_macs_plain=f_one * k, conv_macs_incremental=f_one + inc_one * k,
                       flop_saving=(f_one * k) / (f_one + inc_one * k), threshold_switches=st["threshold_switches"])
            report["results"].append(row)
            diff = row.get("max_abs_diff_map", row.get("max_abs_diff_scores"))
            subset = f", subset {len(pos)}" if sub else ""
            print(f"{arch:9s} window {window:3d} stride {stride:3d} ({k} positions{subset}): "
                  f"plain {row['plain_s_per_image']:7.1f} s/img  "
                  f"incremental {row['incremental_s_per_image']:6.1f} s/img  "
                  f"speed-up {row['speedup']:5.2f}x  FLOP saving {row['flop_saving']:5.1f}x  max|diff| {diff:.2e}",
                  flush=True)
    report["load_average_end"] = os.getloadavg()[0]
    write_report(args.out, report)


if __name__ == "__main__":
    main()
