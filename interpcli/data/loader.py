"""On-device batches with batched augmentation (the airbench ``CifarLoader`` idea).

The whole split lives on the device as uint8; each epoch draws one permutation and one
set of random flips and translations for the whole batch at once, so there is no
per-sample Python work and no worker processes.  Randomness comes from a generator
seeded by ``(seed, epoch)``, which makes every epoch reproducible on its own: a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["DeviceLoader", "augment_batch", "train_val_split", "stratified_subset", "epoch_generator",
           "TRANSLATE_PADS"]

TRANSLATE_PADS = ("zero", "reflect")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 12345) % (2**63 - 1))


def augment_batch(x: torch.Tensor, flip: bool, translate: int, gen: torch.Generator,
                  pad: str = "zero") -> torch.Tensor:
    """Random horizontal flips and random translations by up to ``translate`` pixels.

    Translations take a random crop of the padded image (random crop with padding, as
    torchvision's ``RandomCrop(size, padding=translate)``), done for the whole batch with
    one gather.  ``pad``: ``zero`` (the default, torchvision's and the B-cos recipe's) or
    ``reflect`` (edge replication on images not larger than ``translate``).  The shifts
    drawn do not depend on ``pad``.  Works on any dtype.
    """
    if pad not in TRANSLATE_PADS:
        raise ConfigError(f"translation padding must be one of {', '.join(TRANSLATE_PADS)}; got '{pad}'")
    n, c, h, w = x.shape
    if flip:
        m = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
    if translate > 0:
        r = translate
        mode = "constant" if pad == "zero" else "reflect" if min(h, w) > r else "replicate"
        xp = F.pad(x.float() if x.dtype == torch.uint8 else x, (r, r, r, r), mode=mode).to(x.dtype)
        dy = torch.randint(0, 2 * r + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * r + 1, (n,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
        b = torch.arange(n, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)
    return x


class DeviceLoader:
    """Batches of float images in [0, 1] and labels from uint8 tensors on ``device``.

    Args:
        x, y: uint8 images (N, C, H, W) and int64 labels; moved to ``device`` once.
        batch_size: the *global* batch size.  Under DistributedDataParallel each of
            ``world`` ranks takes its ``rank``-th share of every global batch.
        shuffle, drop_last, flip, translate: the usual meanings.
        translate_pad: padding of translations, ``zero`` or ``reflect`` (see :func:`augment_batch`).
        seed: with the epoch number, fixes the order and the augmentation.
        channels_last: memory format of the batches (faster convolutions on CUDA).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, flip: bool = False, translate: int = 0,
                 seed: int = 0, rank: int = 0, world: int = 1, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32, translate_pad: str = "zero"):
        if batch_size <= 0:
            raise ConfigError("batch size must be positive")
        if translate_pad not in TRANSLATE_PADS:
            raise ConfigError(f"translation padding must be one of {', '.join(TRANSLATE_PADS)}; got '{translate_pad}'")
        self.x = x.to(device)
        self.y = y.to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.flip, self.translate, self.translate_pad, self.seed = flip, translate, translate_pad, seed
        self.rank, self.world = rank, world
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch)
        n = len(self.y)
        order = torch.randperm(n, generator=gen).to(self.x.device) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            idx = order[sl] if order is not None else torch.arange(sl.start, sl.stop, device=self.x.device)
            if self.world > 1:
                idx = idx[self.rank :: self.world]
            xb = self.x[idx]
            if self.flip or self.translate:
                xb = augment_batch(xb, self.flip, self.translate, gen, self.translate_pad)
            xb = xb.to(self.dtype).div_(255)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


def stratified_subset(y: torch.Tensor, n: int, seed: int = 0, stream: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` of the labels ``y``, every class in proportion (largest remainders
    decide the rounding; ties go to the lower class), drawn at random with ``(seed, stream)``.

    Our own few lines rather than scikit-learn's, so that a subset recorded in a checkpoint is
    the same subset with any library version.  ``n >= len(y)`` keeps everything.
    """
    yn = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if n <= 0:
        raise ConfigError(f"a subset needs at least one example, got {n}")
    if n >= len(yn):
        return np.arange(len(yn))
    classes, inverse, counts = np.unique(yn, return_inverse=True, return_counts=True)
    exact = counts * (n / len(yn))
    take = np.floor(exact).astype(np.int64)
    order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - take[k]), k))
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng([int(seed), int(stream)])
    picked = [rng.permutation(np.flatnonzero(inverse == k))[: take[k]] for k in range(len(classes))]
    return np.sort(np.concatenate(picked))


def train_val_split(y: torch.Tensor, val_split: float = 0.0, folds: int = 0, fold: int = 0,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation) inside the training split, stratified by label.

    ``folds=K`` with ``fold=I`` holds out the I-th of K stratified folds; otherwise
    ``val_split`` (a fraction) is held out; with neither, validation is empty.  The test
    split is never touched, so model selection on validation is honest.
    """
    yn = y.cpu().numpy()
    allidx = np.arange(len(yn))
    if folds:
        from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415 (heavy: imported when used)

        if folds < 2:
            raise ConfigError("--folds must be at least 2")
        if not 0 <= fold < folds:
            raise ConfigError(f"--fold must be in 0..{folds - 1}")
        if val_split:
            raise ConfigError("use either --val-split or --folds, not both")
        _, counts = np.unique(yn, return_counts=True)
        if counts.min() < folds:
            raise ConfigError(f"--folds {folds} needs at least {folds} examples of every class")
        tr, va = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(allidx, yn))[fold]
        return tr, va
    if val_split:
        from sklearn.model_selection import train_test_split  # noqa: PLC0415 (heavy: imported when used)

        if not 0 < val_split < 1:
            raise ConfigError("--val-split must be a fraction in (0, 1)")
        try:
            tr, va = train_test_split(allidx, test_size=val_split, stratify=yn, random_state=seed)
        except ValueError as e:
            raise ConfigError(f"--val-split {val_split}: {e}") from None
        return np.sort(tr), np.sort(va)
    return allidx, allidx[:0]
