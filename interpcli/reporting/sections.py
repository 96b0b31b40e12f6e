"""One section of ``interp report`` per kind of ``interp`` output, each with its provenance.

:func:`detect` names a folder's kind by its files:

| kind | marked by | shown |
|---|---|---|
| ``compare`` | ``compare.json`` | per-group and pairwise tables, ``violin.png``, the runs |
| ``consistency`` | ``summary.json`` of kind consistency | summary and paired-test tables, its PNGs |
| ``explain`` / ``occlude`` | ``attributions.npz`` | ``grid.png``; rows = images x columns = methods |
| ``noise-grad`` | ``noise_grad.npz`` | ``grid.png``, alignment scores |
| ``kernels`` | ``kernels.png``, ``snapshots.gif``, ... | montage, GIF, strip, feature map, loss profile |
| ``sparsify`` | ``path.json`` or ``features.json`` | the path, the selection, feature montages |

A folder with checkpoints or ``*.log.jsonl`` files is a ``runs`` section (a table of the
checkpoints and a training-curve PNG the report draws); any other picture is shown as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InterpError
from ..metadata import read_metadata
from ..metrics.report import summary_rows as score_rows
from .curves import LOG_SUFFIX, curves_png, load_logs, log_summary
from .groupstats import fmt, pair_rows, summary_rows
from .html import Html, Section, esc, figure, gallery, image_table, kv, link, note, table
from .provenance import Context, command_text, npz_peek, read_json
from .runs import is_run_checkpoint

__all__ = ["detect", "BUILDERS", "runs_section", "figures_section", "KERNEL_FILES", "SPARSIFY_FILES"]

KERNEL_FILES = ("kernels.png", "kernels.npz", "snapshots.gif", "snapshots_strip.png", "feature_map.png",
                "loss_profile.png", "loss_profile.json")
SPARSIFY_FILES = ("path.json", "features.json", "path.png")
_ROW_FILE = re.compile(r"^(\d{4})_(.+)\.png$")


def detect(folder: Path) -> str | None:
    """The kind of ``interp`` output folder ``folder`` is (see the module doc); None if none."""
    has = lambda name: (folder / name).is_file()
    if has("compare.json"):
        return "compare"
    if has("summary.json") and (read_json(folder / "summary.json") or {}).get("kind") == "consistency":
        return "consistency"
    if has("attributions.npz"):
        return "attributions"
    if has("noise_grad.npz"):
        return "noise-grad"
    if any(has(n) for n in KERNEL_FILES):
        return "kernels"
    if any(has(n) for n in SPARSIFY_FILES):
        return "sparsify"
    return None


def _h3(text: str) -> Html:
    return Html(f"<h3>{esc(text)}</h3>")


def _existing(folder: Path, names: Sequence[str]) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def _scalars(d: Any) -> list[tuple[str, Any]]:
    return [(k, fmt(v) if isinstance(v, float) else v) for k, v in (d or {}).items()
            if isinstance(v, (str, int, float, bool))] if isinstance(d, dict) else []


# ---------------------------------------------------------------------------------------------- explain / occlude

def _row_label(i: int, arrays: dict[str, Any], classes: list[str]) -> str:
    name = lambda c: classes[c] if 0 <= c < len(classes) else str(c)
    src = str(arrays["sources"][i]) if "sources" in arrays and i < len(arrays["sources"]) else f"row {i}"
    parts = [f"#{i} {Path(src).name if '/' in src else src}"]
    if "targets" in arrays and i < len(arrays["targets"]):
        label = int(arrays["labels"][i]) if "labels" in arrays else -1
        pred = int(arrays["predictions"][i]) if "predictions" in arrays else None
        wrong = pred is not None and label >= 0 and pred != label
        parts.append(f"label {name(label) if label >= 0 else '?'} · pred {name(pred) if pred is not None else '?'}"
                     f"{' ✗' if wrong else ''} · target {name(int(arrays['targets'][i]))}")
    return "\n".join(parts)


def attributions_section(folder: Path, ctx: Context, slug: str) -> Section:
    npz = folder / "attributions.npz"
    meta, arrays, names = npz_peek(npz, ("sources", "targets", "labels", "predictions"))
    row_files = {p: _ROW_FILE.match(p.name) for p in folder.glob("*.png")}
    row_files = {p: m for p, m in row_files.items() if m}
    methods = list(meta.get("methods") or sorted({m.group(2) for m in row_files.values()
                                                   if not m.group(2).endswith(("_original", "bcos_rgb"))}))
    n = len(arrays["sources"]) if "sources" in arrays else 1 + max((int(m.group(1)) for m in row_files.values()),
                                                                   default=-1)
    n = int((meta.get("part") or {}).get("rows") or n)  # a result in parts: attributions.npz holds the first rows
    sec = Section("occlude" if "mask_scores" in names else "explain", str(folder),
                  provenance=ctx.checkpoint(meta.get("checkpoint")))
    if not names:
        sec.body.append(note(f"{npz.name} could not be read"))
    params = {m: p for m, p in (meta.get("params") or {}).items() if p}
    sec.body.append(kv([("methods", ", ".join(methods)), ("rows", n),
                        ("parameters", "; ".join(f"{m} {json.dumps(p)}" for m, p in params.items()))]))
    grid = folder / "grid.png"
    if grid.is_file():
        sec.body += [_h3("Every row and method (grid.png)"), ctx.figures([grid], folder, slug, wide=True)]
    bcos = [folder / f"{i:04d}_bcos_rgb.png" for i in range(min(n, ctx.max_rows))]
    columns = methods + (["bcos rgb"] if any(p.is_file() for p in bcos) else [])
    rows = []
    for i in range(min(n, ctx.max_rows)):
        files = [folder / f"{i:04d}_{m}.png" for m in methods] + ([bcos[i]] if len(columns) > len(methods) else [])
        rows.append((_row_label(i, arrays, meta.get("classes") or []),
                     [ctx.asset(f, slug) if f.is_file() else None for f in files]))
    if rows and columns:
        sec.body += [_h3("Per image (rows) and method (columns)"), image_table(columns, rows)]
    if n > ctx.max_rows:
        sec.body.append(note(f"showing the first {ctx.max_rows} of {n} rows (--max-rows)"))
    parts = {p.resolve() for p in folder.glob("attributions-*.npz")}
    sec.body.append(ctx.others(folder, {npz.resolve(), grid.resolve(), *parts, *(p.resolve() for p in row_files)},
                               slug))
    return sec


# ---------------------------------------------------------------------------------------------- consistency

def consistency_section(folder: Path, ctx: Context, slug: str) -> Section:
    summ = read_json(folder / "summary.json") or {}
    sec = Section("consistency", str(folder), provenance=ctx.checkpoint(summ.get("checkpoint")))
    fid, pg = summ.get("fidelity") or {}, summ.get("pointing") or {}
    sec.body.append(kv([("fidelity methods", ", ".join(fid.get("methods", []))), ("pointing game", _scalars(pg)
                        and ", ".join(f"{k} {v}" for k, v in _scalars(pg)))]))
    parts = summ.get("summary") or {}
    if parts:
        sec.body += [_h3("Per metric and method"), table(score_rows(parts), numeric=("n",))]
    tests = [{"metric": metric, "a − b": f"{t['a']} − {t['b']}", "n": t.get("n"), "mean diff": fmt(t.get("mean_diff")),
              "p t (Holm)": fmt(t.get("p_t_holm"), 3), "p Wilcoxon (Holm)": fmt(t.get("p_wilcoxon_holm"), 3),
              "d_z": fmt(t.get("cohen_dz"), 3), "rank-biserial": fmt(t.get("rank_biserial"), 3)}
             for metric, part in parts.items() for t in part.get("tests", [])]
    if tests:
        sec.body += [_h3("Paired tests between methods"), table(tests)]
    pngs = _existing(folder, ("deletion_insertion.png", "scores.png", "pointing.png", "sanity.png"))
    sec.body += [ctx.figures(pngs, folder, slug), ctx.others(folder, {p.resolve() for p in pngs}, slug),
                 ctx.data_links(folder, slug, ["summary.json", "scores.csv", "pointing.csv", "sanity.csv"])]
    return sec


# ---------------------------------------------------------------------------------------------- noise-grad

def noise_grad_section(folder: Path, ctx: Context, slug: str) -> Section:
    meta, _, _ = npz_peek(folder / "noise_grad.npz")
    scores = read_json(folder / "scores.json") or {}
    sec = Section("noise-grad", str(folder),
                  provenance=ctx.checkpoint(meta.get("checkpoint") or scores.get("checkpoint")))
    config = [(k, v) for k, v in _scalars(meta.get("config")) if k != "layer"]
    sec.body.append(kv([("layer", meta.get("layer") or scores.get("layer")), *config]))
    grid = _existing(folder, ("grid.png",))
    sec.body.append(ctx.figures(grid, folder, slug, wide=True))
    if scores.get("summary"):
        sec.body += [_h3("Alignment scores, averaged over units"), kv(_scalars(scores["summary"]))]
    units = [dict(_scalars(u)) for u in scores.get("units", [])[: 4 * ctx.max_rows] if isinstance(u, dict)]
    if units:
        sec.body += [_h3("Per unit"), table(units)]
    sec.body += [ctx.others(folder, {p.resolve() for p in grid}, slug), ctx.data_links(folder, slug, ["scores.json"])]
    return sec


# ---------------------------------------------------------------------------------------------- kernels

def kernels_section(folder: Path, ctx: Context, slug: str) -> Section:
    meta, _, _ = npz_peek(folder / "kernels.npz")
    fmeta, _, _ = npz_peek(folder / "feature_map.npz")
    loss = read_json(folder / "loss_profile.json") or {}
    sec = Section("kernels", str(folder), provenance=ctx.checkpoint(meta.get("checkpoint") or fmeta.get("checkpoint")))
    sec.body.append(kv([(k, meta.get(k)) for k in ("layer", "folded", "scale")] + [("limit", fmt(meta.get("limit")))]
                       + [("feature map", fmeta and f"kernel {fmeta.get('kernel')} on {fmeta.get('source')}"),
                          ("loss log", loss.get("log")), ("stuck run", loss and loss.get("stuck")),
                          ("verdict", loss.get("reason"))]))
    captions = {"kernels.png": "kernel montage", "snapshots.gif": "kernels through training (animated)",
                "snapshots_strip.png": "snapshots strip", "feature_map.png": "feature map",
                "loss_profile.png": "loss profile"}
    pngs = _existing(folder, list(captions))
    sec.body.append(ctx.figures(pngs, folder, slug, captions))
    mp4 = folder / "snapshots.mp4"
    if mp4.is_file():
        sec.body.append(Html(f'<p class="note">Video: {link(ctx.asset(mp4, slug), mp4.name)}</p>'))
    sec.body += [ctx.others(folder, {p.resolve() for p in pngs}, slug), ctx.data_links(folder, slug)]
    return sec


# ---------------------------------------------------------------------------------------------- sparsify

def sparsify_section(folder: Path, ctx: Context, slug: str) -> Section:
    path, feats = read_json(folder / "path.json") or {}, read_json(folder / "features.json") or {}
    sec = Section("sparsify", str(folder), provenance=ctx.checkpoint(path.get("checkpoint")))
    sel = path.get("selection") or {}
    picked = (f"point {sel.get('index')} of {len(path.get('lambdas') or [])} (rule {sel.get('rule')}, "
              f"λ {fmt(sel.get('lambda'))})") if sel else None
    sec.body.append(kv([("selected", picked)]
                       + [(k, fmt(sel[k])) for k in ("nnz", "features_per_class", "val_acc", "test_acc") if k in sel]
                       + [(f"dense {k}", fmt(v)) for k, v in _scalars(path.get("dense")) if k.endswith("_acc")]))
    sparse = folder / "sparse.safetensors"
    if sparse.is_file():
        sec.body.append(kv([("model with the sparse layer", str(sparse)), ("its sha256", ctx.sha256(sparse))]))
    shown = _existing(folder, ("path.png",))
    sec.body.append(ctx.figures(shown, folder, slug, {"path.png": "regularisation path"}, wide=True))
    montages = [(c.get("class"), f) for c in feats.get("classes", []) if isinstance(c, dict)
                for f in c.get("features", []) if isinstance(f, dict) and f.get("montage")]
    figs = []
    for cls, f in montages[: 4 * ctx.max_rows]:
        p = folder / str(f["montage"])
        if p.is_file():
            shown.append(p)
            cap = f"class {cls} · feature {f.get('feature')} · weight {fmt(f.get('weight'), 3)}"
            figs.append(ctx.figures([p], folder, slug, {p.name: cap}))
    if figs:
        sec.body += [_h3("Features of the sparse layer"), Html("".join(figs))]
    if len(montages) > 4 * ctx.max_rows:
        sec.body.append(note(f"showing {4 * ctx.max_rows} of {len(montages)} feature montages"))
    rows = [{"class": c.get("class"), "features (weight)": ", ".join(f"{f.get('feature')} ({fmt(f.get('weight'), 3)})"
                                                                     for f in c.get("features", []))}
            for c in feats.get("classes", []) if isinstance(c, dict)]
    if rows:
        sec.body += [_h3("Features per class"), table(rows[: 4 * ctx.max_rows])]
    others = ctx.others(folder, {p.resolve() for p in shown} | {p.resolve() for p in (folder / "features").glob("*")
                                                                  if montages}, slug)
    sec.body += [others, ctx.data_links(folder, slug, ["path.json", "features.json"])]
    return sec


# ---------------------------------------------------------------------------------------------- compare

def compare_section(folder: Path, ctx: Context, slug: str) -> Section:
    res = read_json(folder / "compare.json") or {}
    sec = Section("compare", str(folder), provenance=[("command", command_text(res.get("argv"))),
                                                      ("runs", len(res.get("runs", [])))])
    explicit = res.get("explicit_groups") or {}
    sec.body.append(kv([("metrics", ", ".join(res.get("metrics", []))),
                        ("groups", "; ".join(f"{k} = {v}" for k, v in explicit.items()) if explicit
                         else "by " + ", ".join(res.get("group_by", []))),
                        ("paired by", ", ".join(res.get("pair_by", [])) or "never")]))
    stats = res.get("stats") or {}
    if stats:
        sec.body += [_h3("Per group (sd with ddof 1; percentile-bootstrap interval of the mean)"),
                     table(summary_rows(stats), numeric=("n",))]
        pairs = pair_rows(stats)
        if pairs:
            sec.body += [_h3("Every two groups (Welch, Hedges' g; paired t and Wilcoxon where runs pair; Holm)"),
                         table(pairs)]
    violin = _existing(folder, ("violin.png",))
    sec.body.append(ctx.figures(violin, folder, slug, {"violin.png": "runs per group"}))
    runs = [{"group": r.get("group"), "run": r.get("path"), **{m: fmt(v) for m, v in (r.get("values") or {}).items()},
             "pair key": ", ".join(map(str, r.get("pair_key") or [])), "sha256": r.get("sha256")}
            for r in res.get("runs", []) if isinstance(r, dict)]
    if runs:
        sec.body += [_h3("Runs"), table(runs)]
    sec.body += [ctx.others(folder, {p.resolve() for p in violin}, slug),
                 ctx.data_links(folder, slug, ["compare.json", "compare.csv"])]
    return sec


# ---------------------------------------------------------------------------------------------- runs / pictures

def _checkpoint_row(p: Path, ctx: Context) -> dict[str, Any]:
    try:
        meta = read_metadata(p)
    except InterpError as e:
        return {"checkpoint": p.name, "arch": f"unreadable: {e}"}
    m, ds = meta.get("metrics") or {}, meta.get("dataset") or {}
    return {"checkpoint": p.name, "arch": meta.get("arch"), "dataset": ds.get("name") if isinstance(ds, dict) else ds,
            "test_acc": fmt(m.get("test_acc")), "val_acc": fmt(m.get("val_acc")), "epochs": m.get("epochs"),
            "created": meta.get("created"), "sha256": ctx.sha256(p), "trained by": command_text(meta.get("argv"))}


def runs_section(files: Sequence[Path], source: str, ctx: Context, slug: str, folder: Path | None = None) -> Section:
    """Checkpoints (a table with sha256 and training command) and training logs (the curves,
    drawn here, and a table); ``folder``: also its other pictures."""
    ckpts = [p for p in files if is_run_checkpoint(p.name)]
    logs = list(dict.fromkeys([p for p in files if p.name.endswith(LOG_SUFFIX)] + [
        p.with_name(p.name[: -len(".safetensors")] + LOG_SUFFIX) for p in ckpts
        if p.with_name(p.name[: -len(".safetensors")] + LOG_SUFFIX).is_file()]))
    sec = Section("runs", source)
    if len(ckpts) == 1:
        sec.provenance = ctx.checkpoint(str(ckpts[0]))
    if ckpts:
        sec.body += [_h3("Checkpoints"), table([_checkpoint_row(p, ctx) for p in ckpts], numeric=("epochs",))]
    readable = []
    for log in logs:
        try:
            readable += load_logs([log])
        except InterpError as e:
            sec.body.append(note(f"{log.name}: {e}"))
    if readable:
        src = ctx.write(curves_png(readable), slug, "training_curves.png")
        sec.body += [_h3("Training curves (drawn by the report from the logs)"),
                     gallery([figure(src, "loss and accuracy per epoch", "training curves")], wide=True),
                     table([{k: fmt(v) if isinstance(v, float) else v for k, v in log_summary(r).items()
                             if k not in ("log", "checkpoint")} for r in readable])]
    if folder is not None:
        sec.body.append(ctx.others(folder, set(), slug, recursive=False))
    return sec


def figures_section(folder: Path, ctx: Context, slug: str) -> Section:
    """Any other folder's pictures."""
    return Section("pictures", str(folder), body=[ctx.others(folder, set(), slug, recursive=False)])


BUILDERS: dict[str, Callable[[Path, Context, str], Section]] = {
    "compare": compare_section, "consistency": consistency_section, "attributions": attributions_section,
    "noise-grad": noise_grad_section, "kernels": kernels_section, "sparsify": sparsify_section}
