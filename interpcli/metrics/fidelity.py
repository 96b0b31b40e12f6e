"""Fidelity of attribution maps: consistency, minimal size, deletion and insertion.

    cfg = FidelityConfig(metrics=("deletion", "insertion", "consistency", "min-size"), step=16)
    res = score_maps(model, x, targets, {"grad": maps_g, "rise": maps_r}, cfg)
    res.scores["deletion"]["grad"]       # (N,) deletion AUC of every image
    res.curves["deletion"]["grad"]       # (N, steps + 1) the target probability along the way

Every metric ranks the pixels of an image by its map (:func:`pixel_ranks`: the map summed
over channels, most relevant first, ties broken by a seeded random order) and scores masked
copies of the image, all through :func:`~interpcli.perturb.masked_scores`: the masked copies of
all images, methods and metrics share forward batches, and every image costs exactly
``steps + 1`` forwards per deletion / insertion curve and one per kept fraction.

- **deletion / insertion** (RISE, Petsiuk et al. 2018, ``CausalMetric``): replace the ``step``
  most relevant pixels at a time by the substrate (deletion; RISE's zeros of the normalised
  input = :func:`~interpcli.perturb.encoder_mean` here), or start from the substrate (RISE's
  blur, :func:`rise_blur`) and put the original pixels back in the same order (insertion).
  The curve is the softmax probability of the row's target (the explained class; RISE uses
  the class predicted on the image, which is the target of ``interp explain``'s default);
  AUC = trapezoid rule on a [0, 1] axis, ``(sum - first/2 - last/2) / steps``.
- **consistency** (``../shared/seeds/001``): keep the top-q fraction of pixels, fill the rest
  with the baseline: S.  C(q) = 1 / (max(|f(S) - f(X)|, eps) * q) with f the probability
  vector (``output='prob'``) or the L2-normalised penultimate representation (``'repr'``,
  class-agnostic), the norm the Euclidean one; with ``output='class'`` the distance is the
  0/1 change of the top-1 class and C(q) = [class kept] / q.  The per-image score is C at
  q* = the smallest fraction below 1 that keeps the top-1 class (the explanation of the
  note's Definition 1); 0 when no fraction below 1 keeps it.
- **min-size** (the "Minimal Size" idea of OSA-DAS): that q*, or 1 when no smaller fraction
  keeps the top-1 class.  Lower is better.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ..errors import ConfigError, did_you_mean
from ..models.features import capture_output, feature_module, reduce_features
from ..perturb import MaskSet, encoder_mean, masked_scores

__all__ = ["METRICS", "OUTPUTS", "SUBSTRATES", "FidelityConfig", "FidelityResult", "score_maps", "pixel_ranks",
           "saliency", "rise_blur", "substrate", "step_counts", "auc", "parse_fractions", "EPS"]

METRICS = ("consistency", "min-size", "deletion", "insertion")
OUTPUTS = ("prob", "repr", "class")
SUBSTRATES = ("encoder", "black", "mean", "blur")
EPS = 1e-6  # floor of |f(S) - f(X)| in the consistency metric (f(S) = f(X) to float precision)


def parse_fractions(spec: str | int | Sequence[float]) -> tuple[float, ...]:
    """``20`` -> 0.05, 0.10, ..., 1.00 (k/N for k = 1..N); ``"0.01,0.1,0.5"`` -> those, sorted."""
    if isinstance(spec, (list, tuple)):
        vals = [float(v) for v in spec]
    else:
        text = str(spec).strip()
        try:
            if text.isdigit():
                n = int(text)
                if n < 1:
                    raise ConfigError(f"--fractions N needs N >= 1; got {n}")
                vals = [k / n for k in range(1, n + 1)]
            else:
                vals = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--fractions must be an integer N or comma-separated fractions; got '{spec}'") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise ConfigError(f"fractions must lie in (0, 1]; got {spec}")
    return tuple(sorted(set(vals)))


@dataclasses.dataclass
class FidelityConfig:
    """What to compute (see the module docstring for the definitions).

    Attributes:
        metrics: any of :data:`METRICS`.
        fractions: kept fractions for consistency and min-size.
        step: pixels per deletion / insertion step (None: one image row, RISE's 224 on 224 px).
        deletion_fill, insertion_fill, baseline: substrates (:data:`SUBSTRATES` or a number in
            [0, 1]) of deletion, insertion and consistency / min-size.
        output: f of the consistency metric, :data:`OUTPUTS`.
        score: ``prob`` (softmax, RISE) or ``logit`` along deletion / insertion curves.
        rank_by: ``sum`` (signed sum over channels: positive evidence first) or ``abs`` (sum of
            absolute values: magnitude first).
        seed: the random order that breaks ties between equal attributions.
    """

    metrics: tuple[str, ...] = METRICS
    fractions: tuple[float, ...] = parse_fractions(20)
    step: int | None = None
    deletion_fill: str | float = "encoder"
    insertion_fill: str | float = "blur"
    baseline: str | float = "encoder"
    output: str = "prob"
    score: str = "prob"
    rank_by: str = "sum"
    seed: int = 0
    batch_size: int | None = None

    def check(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            hint = did_you_mean(bad[0], METRICS) if bad else ""
            raise ConfigError(f"unknown metric {', '.join(bad) or '(none)'}{hint or ';'} use {', '.join(METRICS)}")
        for name in ("deletion_fill", "insertion_fill", "baseline"):
            v = getattr(self, name)
            if not (v in SUBSTRATES or (isinstance(v, (int, float)) and 0 <= v <= 1)):
                raise ConfigError(f"{name.replace('_', '-')} must be {', '.join(SUBSTRATES)} or a number in [0, 1]; "
                                  f"got {v!r}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"output must be {', '.join(OUTPUTS)}; got '{self.output}'")
        if self.score not in ("prob", "logit"):
            raise ConfigError(f"score must be prob or logit; got '{self.score}'")
        if self.rank_by not in ("sum", "abs"):
            raise ConfigError(f"rank-by must be sum or abs; got '{self.rank_by}'")
        if self.step is not None and self.step < 1:
            raise ConfigError(f"step must be at least 1 pixel; got {self.step}")
        self.fractions = parse_fractions(self.fractions)


@dataclasses.dataclass
class FidelityResult:
    """``scores[metric][method]``: (N,) per image; ``curves[name][method]``: (N, K) where name is
    ``deletion``, ``insertion`` (K = steps + 1), ``distance``, ``kept`` or ``consistency``
    (K = len(fractions)); ``counts``: pixels removed / inserted at each deletion step."""

    methods: list[str]
    fractions: tuple[float, ...]
    step: int
    counts: np.ndarray
    scores: dict[str, dict[str, np.ndarray]]
    curves: dict[str, dict[str, np.ndarray]]


# ---------------------------------------------------------------------------------------------- ranking

def saliency(maps: torch.Tensor, size: tuple[int, int], rank_by: str = "sum") -> torch.Tensor:
    """(N, C, h, w) maps -> (N, H, W) relevance per pixel: summed over channels (``abs``: of the
    absolute values), bilinearly resized to ``size`` when the map is coarser (Grad-CAM)."""
    m = maps.float()
    if m.dim() == 3:
        m = m[:, None]
    s = (m.abs() if rank_by == "abs" else m).sum(1, keepdim=True)
    if tuple(s.shape[-2:]) != tuple(size):
        s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    return s[:, 0]


def pixel_ranks(sal: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, H, W) relevance -> (N, H, W) int64 ranks, 0 = most relevant.  Equal values are ordered
    by one seeded random permutation of the pixels (not by raster order, which would delete the
    top rows of a constant map first); NaN counts as least relevant."""
    n, h, w = sal.shape
    flat = torch.nan_to_num(sal.reshape(n, -1).double(), nan=-math.inf)
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(int(seed))).to(flat.device)
    order = perm[torch.sort(-flat[:, perm], dim=1, stable=True).indices]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=flat.device).expand(n, -1).contiguous())
    return ranks.reshape(n, h, w)


def step_counts(hw: int, step: int) -> torch.Tensor:
    """Pixels removed after each of RISE's ``ceil(HW / step)`` steps: 0, step, ..., HW."""
    n_steps = math.ceil(hw / step)
    return (torch.arange(n_steps + 1) * step).clamp_max(hw)


def auc(curve: np.ndarray) -> np.ndarray:
    """RISE's area under a curve of K = steps + 1 points on a [0, 1] axis (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    steps = c.shape[-1] - 1
    if steps < 1:
        return c[..., 0]
    return (c.sum(-1) - c[..., 0] / 2 - c[..., -1] / 2) / steps


# ---------------------------------------------------------------------------------------------- substrates

def rise_blur(x: torch.Tensor, pad: torch.Tensor | float = 0.0) -> torch.Tensor:
    """RISE's insertion substrate (``evaluation.py``): ``conv2d(x, gkern(11, 5), padding=5)`` per
    channel on the *normalised* input, whose zero padding is the encoder's zero: here ``pad``
    (:func:`~interpcli.perturb.encoder_mean`) in pixel space.  ``gkern`` is scipy's
    ``gaussian_filter`` (sigma 5, reflect mode) of an 11 x 11 delta, as in RISE."""
    k = 11
    delta = np.zeros((k, k))
    delta[k // 2, k // 2] = 1.0
    kern = torch.from_numpy(gaussian_filter(delta, 5.0).astype(np.float32))
    c = x.shape[1]
    pad_t = torch.as_tensor(pad, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1) if torch.is_tensor(pad) \
        else torch.full((1, 1, 1, 1), float(pad), dtype=x.dtype, device=x.device)
    shifted = x - pad_t
    out = F.conv2d(shifted, kern.to(x).expand(c, 1, k, k), padding=k // 2, groups=c)
    return out + pad_t


def substrate(kind: str | float, model: Callable, x: torch.Tensor) -> torch.Tensor:
    """The replacement images (N, C, H, W) of a substrate name (:data:`SUBSTRATES`) or number."""
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    zero = encoder_mean(model)
    zero_t = zero.to(x) if torch.is_tensor(zero) else torch.tensor(float(zero)).to(x)
    if kind == "encoder":
        return (torch.zeros_like(x) + zero_t.reshape(1, -1, 1, 1)).expand_as(x).contiguous()
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "blur":
        return rise_blur(x, zero_t)
    raise ConfigError(f"unknown substrate '{kind}'; use {', '.join(SUBSTRATES)} or a number")


# ---------------------------------------------------------------------------------------------- scoring

class _Outputs(torch.nn.Module):
    """Logits, with the penultimate representation appended when the consistency metric needs it."""

    def __init__(self, model: torch.nn.Module, with_repr: bool):
        super().__init__()
        self.model, self.with_repr = model, with_repr
        self.module, self.take_input = feature_module(model, None) if with_repr else (None, False)
        self.pool = getattr(model, "feature_pool", "avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return self.model(x).float()
        store: dict[str, torch.Tensor] = {}
        if self.take_input:
            handle = self.module.register_forward_pre_hook(lambda _m, inputs: store.__setitem__("f", inputs[0]))
            try:
                logits = self.model(x).float()
            finally:
                handle.remove()
        else:
            with capture_output(self.module) as cap:
                logits = self.model(x).float()
            store["f"] = cap["out"]
        f = F.normalize(reduce_features(store["f"], self.pool), dim=1)
        return torch.cat([logits, f], 1)


def score_maps(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, maps: dict[str, torch.Tensor],
               cfg: FidelityConfig | None = None, *, chunk: int = 64,
               progress: Callable[[int, int], None] | None = None) -> FidelityResult:
    """Every metric of ``cfg`` for every image of ``x`` (N, C, H, W) and every method's ``maps``
    (method -> (N, C or 1, h, w)); ``targets`` (N,) the explained classes.  Images go through in
    chunks of ``chunk`` (all their masked copies share forward batches); ``progress(done, N)``."""
    cfg = cfg or FidelityConfig()
    cfg.check()
    dev = x.device
    n, _, h, w = x.shape
    hw = h * w
    for m, a in maps.items():
        if len(a) != n:
            raise ConfigError(f"method '{m}' has {len(a)} maps for {n} images")
    step = int(cfg.step or w)
    counts = step_counts(hw, step)
    keep = torch.tensor([max(1, math.ceil(q * hw)) for q in cfg.fractions])
    want = set(cfg.metrics)
    jobs: list[tuple[str, torch.Tensor, bool, str | float]] = []  # (name, counts, invert, substrate)
    if "deletion" in want:
        jobs.append(("deletion", counts, False, cfg.deletion_fill))
    if "insertion" in want:
        jobs.append(("insertion", counts, True, cfg.insertion_fill))
    if want & {"consistency", "min-size"}:
        jobs.append(("keep", keep, True, cfg.baseline))
    net = _Outputs(model, cfg.output == "repr" and bool(want & {"consistency", "min-size"}))
    with torch.inference_mode():
        n_cls = int(model(x[:1]).shape[1])
    methods = list(maps)
    raw: dict[str, dict[str, list[torch.Tensor]]] = {j[0]: {m: [] for m in methods} for j in jobs}
    done = 0
    for start in range(0, n, chunk):
        xb, tb = x[start : start + chunk], targets[start : start + chunk].to(dev)
        b = len(xb)
        with torch.inference_mode():
            ref = net(xb)
        ref_logits, ref_repr = ref[:, :n_cls], ref[:, n_cls:]
        ref_vec = ref_repr if cfg.output == "repr" else ref_logits.softmax(1)
        ref_pred = ref_logits.argmax(1)
        fills = {j[3]: substrate(j[3], model, xb) for j in jobs}
        rows_x, rows_sets, rows_fill, rows_of = [], [], [], []
        for m in methods:
            ranks = pixel_ranks(saliency(maps[m][start : start + chunk].to(dev), (h, w), cfg.rank_by), cfg.seed)
            for name, cnt, inv, sub in jobs:
                rows_x.append(xb)
                rows_sets += [MaskSet.from_ranks(r, cnt, invert=inv) for r in ranks]
                rows_fill.append(fills[sub])
                rows_of.append((m, name))
        img = torch.arange(b, device=dev).repeat(len(rows_of))  # virtual row -> image in the chunk
        score = _row_score(cfg, n_cls, img, tb, ref_vec, ref_pred)
        out = masked_scores(net, torch.cat(rows_x), rows_sets, torch.cat(rows_fill), score,
                            batch_size=cfg.batch_size)
        for k, (m, name) in enumerate(rows_of):
            raw[name][m].append(torch.stack(out[k * b : (k + 1) * b]).cpu())
        done += b
        if progress is not None:
            progress(done, n)
    return _collect(raw, methods, cfg, step, counts)


def _row_score(cfg: FidelityConfig, n_cls: int, img: torch.Tensor, targets: torch.Tensor, ref_vec: torch.Tensor,
               ref_pred: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Score of a masked copy: (target probability or logit, |f(S) - f(X)|, top-1 kept)."""

    def score(out: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        logits = out[:, :n_cls]
        i = img[row]
        t = logits.softmax(1) if cfg.score == "prob" else logits
        target_s = t.gather(1, targets[i, None])[:, 0]
        vec = out[:, n_cls:] if cfg.output == "repr" else logits.softmax(1)
        dist = (vec - ref_vec[i]).norm(dim=1)
        kept = (logits.argmax(1) == ref_pred[i]).float()
        return torch.stack([target_s, dist, kept], 1)

    return score


def _collect(raw, methods, cfg: FidelityConfig, step: int, counts: torch.Tensor) -> FidelityResult:
    scores: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    q = np.asarray(cfg.fractions)
    for name in ("deletion", "insertion"):
        if name in raw:
            curves[name] = {m: torch.cat(raw[name][m])[..., 0].numpy() for m in methods}
            scores[name] = {m: auc(c) for m, c in curves[name].items()}
    if "keep" in raw:
        for key in ("distance", "kept", "consistency"):
            curves[key] = {}
        for key in set(cfg.metrics) & {"consistency", "min-size"}:
            scores[key] = {}
        for m in methods:
            r = torch.cat(raw["keep"][m]).numpy().astype(np.float64)
            dist, kept = r[..., 1], r[..., 2] > 0.5
            if cfg.output == "class":
                c = kept / q
            else:
                c = 1.0 / (np.maximum(dist, EPS) * q)
            curves["distance"][m] = (1.0 - kept if cfg.output == "class" else dist).astype(np.float32)
            curves["kept"][m] = kept.astype(np.float32)
            curves["consistency"][m] = c.astype(np.float32)
            below = kept & (q < 1)
            first = np.where(below.any(1), below.argmax(1), -1)
            if "min-size" in scores:
                scores["min-size"][m] = np.where(first >= 0, q[np.maximum(first, 0)], 1.0)
            if "consistency" in scores:
                scores["consistency"][m] = np.where(first >= 0, c[np.arange(len(c)), np.maximum(first, 0)], 0.0)
    return FidelityResult(methods, tuple(cfg.fractions), step, counts.numpy(), scores, curves)
