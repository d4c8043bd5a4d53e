"""Training data: iHarmony4, FFHQH, and plain image+mask folders, plus fixed splits.

Every dataset returns samples ``{"comp": (3, S, S), "real": (3, S, S), "mask": (1, S, S),
"name": str}``: RGB floats in [0, 1] and a mask binarized at 0.5 after resizing (the paper
binarizes all masks, Appendix A). Images are read with OpenCV: greyscale becomes 3
channels, an alpha channel is dropped, 16-bit pixels are scaled to 8 bits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import cover_crop, decode_file, header_size, read_image
from vcam_harmonize.training.config import FRAMINGS, TrainConfig, set_name
from vcam_harmonize.training.recipe import colour_transfer, recolour_foreground
from vcam_harmonize.training.splits import (
    IMAGE_EXTENSIONS,
    folder_splits,
    image_stems,
    index_column,
    stem,
)

logger = logging.getLogger(__name__)

IHARMONY4_SUBSETS = ("HCOCO", "HFlickr", "Hday2night", "HAdobe5k")


# ----------------------------------------------------------------------------- image I/O
def read_mask(path: str | Path) -> np.ndarray:
    """Mask as ``(H, W)`` float32 in [0, 1].

    A greyscale file is the mask; a 4-channel file's alpha is (a cut-out); a colour file
    is converted to grey.
    """
    pixels = decode_file(path)
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, 3]
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    elif pixels.ndim == 3:
        pixels = pixels[:, :, 0]
    return pixels.astype(np.float32) / scale


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)``, from the file header where the format allows it."""
    size = header_size(Path(path))
    if size is not None:
        return size
    height, width = decode_file(path).shape[:2]
    return width, height


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``(H, W[, C])``: area averaging when shrinking, bilinear when enlarging."""
    if array.shape[1] == width and array.shape[0] == height:
        return array
    shrinking = width <= array.shape[1] and height <= array.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=interpolation)


def cover_crop_square(array: np.ndarray, size: int) -> np.ndarray:
    """Scale ``(H, W[, C])`` so it covers ``size x size``, then cut out the centre."""
    return cover_crop(array, (size, size))


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def mask_to_tensor(mask: np.ndarray) -> Tensor:
    """``(H, W)`` float -> ``(1, H, W)`` float in {0, 1}, foreground where > 0.5."""
    return torch.from_numpy(np.ascontiguousarray(mask > 0.5)).float()[None]


def _sample(comp: Tensor, real: Tensor, mask: Tensor, name: str, flip: bool) -> dict:
    if flip:
        comp, real, mask = comp.flip(-1), real.flip(-1), mask.flip(-1)
    return {"comp": comp, "real": real, "mask": mask, "name": name}


def _load_pair(
    comp_path: Path, real_path: Path, mask_path: Path, name: str, size: int | None, flip: bool
) -> dict:
    """A stored composite, its real photo and mask, each resized to ``size x size``."""
    comp, real, mask = read_image(comp_path), read_image(real_path), read_mask(mask_path)
    if size is not None:
        comp, real, mask = (resize(a, size, size) for a in (comp, real, mask))
    elif not comp.shape[:2] == real.shape[:2] == mask.shape:
        raise InputError(f"{name}: composite, real and mask sizes differ; pass a size")
    return _sample(image_to_tensor(comp), image_to_tensor(real), mask_to_tensor(mask), name, flip)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"list file {path} is missing; check the dataset folder and split")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- datasets
class IHarmony4Dataset(Dataset):
    """iHarmony4 (Cong et al. 2020) in its released layout.

    ``<root>/<Sub>/{composite_images,masks,real_images}`` with ``<Sub>_train.txt`` and
    ``<Sub>_test.txt``. A composite ``a0001_1_1.jpg`` uses ``masks/a0001_1.png`` and
    ``real_images/a0001.jpg``. Subsets missing from ``root`` are left out.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        subsets: Sequence[str] = IHARMONY4_SUBSETS,
        size: int | None = 256,
        hflip: float = 0.0,
    ) -> None:
        if split not in ("train", "test"):
            raise InputError(f"iHarmony4 split must be 'train' or 'test', not {split!r}")
        self.root, self.size, self.hflip = Path(root), size, hflip
        present = [sub for sub in subsets if (self.root / sub).is_dir()]
        if not present:
            raise InputError(
                f"no iHarmony4 subset ({', '.join(subsets)}) in {self.root}; "
                "pass the folder that holds them"
            )
        self.items = [
            (sub, Path(line).name)
            for sub in present
            for line in _read_list(self.root / sub / f"{sub}_{split}.txt")
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        subset, file_name = self.items[index]
        folder = self.root / subset
        parts = Path(file_name).stem.rsplit("_", 2)
        if len(parts) != 3:
            raise InputError(f"{subset}: {file_name} is not <name>_<mask>_<n>.jpg; fix the list")
        base, mask_id, _ = parts
        return _load_pair(
            folder / "composite_images" / file_name,
            folder / "real_images" / f"{base}.jpg",
            folder / "masks" / f"{base}_{mask_id}.png",
            f"{subset}/{file_name}",
            self.size,
            torch.rand(()).item() < self.hflip,
        )


class FFHQHDataset(Dataset):
    """FFHQH (Sec. 3.2) in its released layout; the real photos come from FFHQ.

    ``<root>/{train,val,test}_split.txt`` list names such as ``00609.png``; the composite
    is ``<root>/comp/<name>``, the mask ``<root>/alpha/<name>`` (both PNG: a name with
    another suffix is looked up with ``.png``) and the real photo ``<real_root>/<name>``.
    """

    def __init__(
        self,
        root: str | Path,
        real_root: str | Path,
        split: str = "train",
        size: int | None = 256,
        hflip: float = 0.0,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise InputError(f"FFHQH split must be 'train', 'val' or 'test', not {split!r}")
        self.root, self.real_root = Path(root), Path(real_root)
        self.size, self.hflip = size, hflip
        self.names = _read_list(self.root / f"{split}_split.txt")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        stored = Path(name).with_suffix(".png")
        return _load_pair(
            self.root / "comp" / stored,
            self.real_root / name,
            self.root / "alpha" / stored,
            name,
            self.size,
            torch.rand(()).item() < self.hflip,
        )


def find_image(folder: Path, stem: str) -> Path | None:
    """``folder/stem.<ext>`` for the first image extension that exists, else None."""
    for ext in IMAGE_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


class FolderDataset(Dataset):
    """Real photos with object masks; composites are made on the fly.

    Layout: ``<root>/images/NAME.jpg`` (or another image type) and ``<root>/masks/NAME.png``
    (255 = foreground). Each item is cover-cropped to ``size x size``; its composite comes
    from :func:`recipe.colour_transfer` toward another random photo of the folder with
    probability ``transfer_prob``, otherwise from :func:`recipe.recolour_foreground`.
    Item ``i`` is the same for the same ``(seed, epoch, i)``; call :meth:`set_epoch`.

    Images without a mask, or whose mask has another size, are logged and skipped
    (``on_error="skip"``) or raise :class:`InputError` (``on_error="stop"``).

    Training-only options: ``crop_scale`` (random square crops, see
    :func:`random_square_crop`), ``global_colour`` (see :func:`global_recolour`) and
    ``identity_prob`` (the share of items whose composite is the photo itself, which
    teaches the network to leave a harmonious person alone). ``framing="upper_body"``
    frames each photo as a webcam shows a person (:func:`upper_body_crop`; random per
    epoch and item, so held-out sets get one fixed framing each) before any other crop.
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str] | None = None,
        size: int | None = 256,
        hflip: float = 0.0,
        seed: int = 0,
        transfer_prob: float = 0.0,
        on_error: str = "skip",
        crop_scale: float = 1.0,
        global_colour: float = 0.0,
        identity_prob: float = 0.0,
        framing: str = "square",
        backdrop_colour: float = 0.0,
    ) -> None:
        if framing not in FRAMINGS:
            raise InputError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        if on_error not in ("skip", "stop"):
            raise InputError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
        if not 0 < crop_scale <= 1:
            raise InputError(f"crop_scale must be in (0, 1], got {crop_scale}")
        if not 0 <= global_colour <= 1:
            raise InputError(f"global_colour must be in [0, 1], got {global_colour}")
        if not 0 <= identity_prob < 1:
            raise InputError(f"identity_prob must be in [0, 1), got {identity_prob}")
        if not 0 <= backdrop_colour <= 1:
            raise InputError(f"backdrop_colour must be in [0, 1], got {backdrop_colour}")
        self.root = Path(root)
        self.size, self.hflip, self.seed, self.transfer_prob = size, hflip, seed, transfer_prob
        self.crop_scale, self.global_colour = crop_scale, global_colour
        self.identity_prob, self.framing = identity_prob, framing
        self.backdrop_colour = backdrop_colour
        self.epoch = 0
        images, masks = self.root / "images", self.root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise InputError(f"{self.root} needs images/ and masks/ folders; check the path")
        if names is None:
            names = image_stems(images)
        self.pairs: list[tuple[str, Path, Path]] = []
        for name in map(stem, names):
            problem, pair = self._check(name)
            if pair is not None:
                self.pairs.append(pair)
            elif on_error == "stop":
                raise InputError(f"{problem}; fix it or use on_error='skip'")
            else:
                logger.warning("skipping %s", problem)
        if not self.pairs:
            raise InputError(f"no usable image+mask pairs in {self.root}; add images and masks")

    def _check(self, stem: str) -> tuple[str | None, tuple[str, Path, Path] | None]:
        """``(problem, None)`` for an unusable name, else ``(None, (stem, image, mask))``."""
        image = find_image(self.root / "images", stem)
        mask = find_image(self.root / "masks", stem)
        if image is None:
            return f"{self.root / 'images' / stem}.*: no such image", None
        if mask is None:
            return f"{image}: no mask {self.root / 'masks' / stem}.png", None
        try:
            image_wh, mask_wh = image_size(image), image_size(mask)
        except InputError as err:  # unreadable or cut short
            return str(err), None
        if image_wh != mask_wh:
            return f"{image}: image is {image_wh} (w, h) but mask {mask.name} is {mask_wh}", None
        return None, (stem, image, mask)

    @property
    def names(self) -> list[str]:
        """Names (file stems) of the usable pairs, in item order."""
        return [stem for stem, _, _ in self.pairs]

    def set_epoch(self, epoch: int) -> None:
        """Select the composites of ``epoch`` (each epoch recolours differently)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int, rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
        _, image_path, mask_path = self.pairs[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        if self.framing == "upper_body":
            image, mask = upper_body_crop(image, mask, rng)
        if rng is not None and self.crop_scale < 1:
            image, mask = random_square_crop(image, mask, self.crop_scale, rng)
        if self.size is not None:
            image, mask = cover_crop_square(image, self.size), cover_crop_square(mask, self.size)
        return image_to_tensor(image)[None], mask_to_tensor(mask)[None]

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        real, mask = self._load(index, rng)
        if self.global_colour > 0:
            real = global_recolour(real, self.global_colour, rng)
        if self.backdrop_colour and rng.random() < self.backdrop_colour:
            real = recolour_backdrop(real, mask, rng)
        flip = bool(rng.random() < self.hflip)
        if self.identity_prob and rng.random() < self.identity_prob:
            comp = real.clone()  # already harmonious: the right answer is no change
        elif len(self) > 1 and rng.random() < self.transfer_prob:
            other = (index + int(rng.integers(1, len(self)))) % len(self)
            comp = colour_transfer(real, mask, *self._load(other))
        else:
            comp = recolour_foreground(real, mask, seed=int(rng.integers(2**31)))
        return _sample(comp[0], real[0], mask[0], self.pairs[index][0], flip)


def foreground(mask: np.ndarray) -> np.ndarray:
    """The mask's foreground as booleans, whether it holds floats in [0, 1] or 0-255."""
    return mask > 0.5 if mask.dtype.kind == "f" else mask > 127


def upper_body_crop(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A square crop of head and shoulders, as a webcam frames a person in a call.

    The square is 1.1-1.6x as wide as the person (1.35x without ``rng``), as tall as
    that allows inside the photo, its top 0-15% of its side above the top of the mask
    (7.5% without ``rng``), centred on the person's upper part. It always lies inside
    the photo, so image and mask are cut alike and no pixel is invented. A photo whose
    mask is empty comes back centre-cropped to its largest square.

    image ``(H, W[, C])``, mask ``(H, W)`` -> both ``(S, S[, C])`` with ``S <= min(H, W)``.
    """
    height, width = mask.shape[:2]
    full = min(height, width)
    rows, cols = np.nonzero(foreground(mask))
    if rows.size == 0:
        top, left = (height - full) // 2, (width - full) // 2
        window = (slice(top, top + full), slice(left, left + full))
        return image[window], mask[window]
    widen = rng.uniform(1.1, 1.6) if rng is not None else 1.35
    headroom = rng.uniform(0.0, 0.15) if rng is not None else 0.075
    person_width = cols.max() - cols.min() + 1
    side = int(np.clip(round(person_width * widen), min(16, full), full))
    top = int(np.clip(round(rows.min() - headroom * side), 0, height - side))
    upper = cols[rows < top + side]
    centre = (upper.min() + upper.max()) / 2 if upper.size else (cols.min() + cols.max()) / 2
    left = int(np.clip(round(centre - side / 2), 0, width - side))
    return image[top : top + side, left : left + side], mask[top : top + side, left : left + side]


def random_square_crop(
    image: np.ndarray, mask: np.ndarray, min_area: float, rng: np.random.Generator, tries: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop covering ``min_area`` to all of the largest square, at a
    random place. Crops that keep under 20% of the foreground are redrawn; after
    ``tries`` failures the largest square centred on the foreground is returned."""
    height, width = mask.shape[:2]
    full = min(height, width)
    inside = foreground(mask)
    total = float(inside.sum())
    for _ in range(tries):
        side = max(8, int(round(full * np.sqrt(rng.uniform(min_area, 1.0)))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        window = (slice(top, top + side), slice(left, left + side))
        if total == 0 or inside[window].sum() >= 0.2 * total:
            return image[window], mask[window]
    rows, cols = np.nonzero(inside)
    top = int(np.clip(rows.mean() - full / 2, 0, height - full))
    left = int(np.clip(cols.mean() - full / 2, 0, width - full))
    return image[top : top + full, left : left + full], mask[top : top + full, left : left + full]


def global_recolour(real: Tensor, strength: float, rng: np.random.Generator) -> Tensor:
    """Change the light of a whole photo (foreground and background alike, so it stays
    harmonious): a brightness gain, a white-balance tint and a gamma, each within
    ``strength`` of the neutral value (at 1: gain 0.6-1.4, tint 0.8-1.2 per channel,
    gamma 0.67-1.5). Training on such photos makes a person's absolute colour useless
    as a cue, so the network must read the background to correct the foreground.

    ``real``: ``(1, 3, H, W)`` in [0, 1]; returns the same shape.
    """
    gain = 1 + strength * rng.uniform(-0.4, 0.4)
    tint = 1 + strength * rng.uniform(-0.2, 0.2, 3)
    gamma = float(np.exp(strength * rng.uniform(np.log(1 / 1.5), np.log(1.5))))
    factors = torch.as_tensor(gain * tint, dtype=real.dtype).view(1, 3, 1, 1)
    return (real.clamp(0, 1) ** gamma * factors).clamp(0, 1)


def recolour_backdrop(real: Tensor, mask: Tensor, rng: np.random.Generator) -> Tensor:
    """Give the photo another backdrop colour and leave the person as they are, as in
    studio and press photos whose coloured backdrop is paint, not light: a gain of
    0.5-1.5 per channel and a gamma of 0.67-1.5 applied to the background only, mixed
    in by the soft mask. Trained on such photos, the network learns that a backdrop's
    colour alone need not tint the person in front of it.

    ``real`` ``(1, 3, H, W)`` and ``mask`` ``(1, 1, H, W)`` in [0, 1]; returns ``real``'s
    shape, equal to ``real`` wherever the mask is 1.
    """
    gains = torch.as_tensor(rng.uniform(0.5, 1.5, 3), dtype=real.dtype).view(1, 3, 1, 1)
    gamma = float(np.exp(rng.uniform(np.log(1 / 1.5), np.log(1.5))))
    backdrop = (real.clamp(0, 1) ** gamma * gains).clamp(0, 1)
    return mask * real + (1 - mask) * backdrop


class EpochSample(Dataset):
    """A fresh random draw of ``count`` items of ``dataset`` in every epoch, without
    repeats, so that each set adds the same number of samples per epoch however large it
    is, and short epochs still walk the whole set over time.

    ``weights`` (one per item, default equal) skew the draw: give a small source inside a
    set a larger share. ``count`` above ``len(dataset)`` is cut to it. Item ``i`` of an
    epoch is the same for the same ``(seed, epoch)``; :meth:`set_epoch` forwards the epoch
    to ``dataset``.
    """

    def __init__(
        self, dataset: Dataset, count: int, seed: int, weights: Sequence[float] | None = None
    ) -> None:
        if count < 1:
            raise InputError(f"samples per epoch must be 1 or more, not {count}")
        self.dataset, self.count, self.seed = dataset, min(count, len(dataset)), seed
        if weights is None:
            self.p = None
        else:
            p = np.asarray(weights, dtype=np.float64)
            if p.shape != (len(dataset),) or not np.all(p > 0):
                raise InputError("sampling weights need one positive number per item")
            self.p = p / p.sum()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch, 7919])
        self.indices = rng.choice(len(self.dataset), self.count, replace=False, p=self.p)
        set_epoch(self.dataset, epoch)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return self.dataset[int(self.indices[index])]


def source_weights(sources: Sequence[str], balance: float) -> list[float]:
    """Per-item sampling weights ``count(source) ** -balance``: 0 keeps every photo
    equally likely (a large source dominates), 1 gives every source the same share."""
    counts: dict[str, int] = {}
    for source in sources:
        counts[source] = counts.get(source, 0) + 1
    return [counts[source] ** -balance for source in sources]


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell every on-the-fly dataset inside ``dataset`` which epoch it is."""
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            set_epoch(part, epoch)
    elif isinstance(dataset, Subset):
        set_epoch(dataset.dataset, epoch)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


# ----------------------------------------------------------------------------- config
@dataclass
class Splits:
    """Training data (one dataset) and the held-out sets by name."""

    train: Dataset
    val: dict[str, Dataset]


def _folder_parts(ds, data) -> tuple[Dataset, Dataset]:
    """A folder set's training part (its repeats, or a fresh draw per epoch) and its
    fixed held-out part."""
    train_names, val_names = folder_splits(ds.root, ds.split, data.seed, ds.val_count,
                                           ds.val_fraction)
    # each repeat recolours its photos differently
    repeats = [
        FolderDataset(ds.root, train_names, data.size, data.hflip, data.seed + 1000 * r,
                      ds.transfer_prob, data.on_error, crop_scale=ds.crop_scale,
                      global_colour=ds.global_colour, identity_prob=ds.identity_prob,
                      framing=ds.framing, backdrop_colour=ds.backdrop_colour)
        for r in range(ds.repeat)
    ]
    train: Dataset = repeats[0] if len(repeats) == 1 else ConcatDataset(repeats)
    if ds.samples:
        weights = None
        if ds.source_balance:
            source_of = index_column(ds.root, "source")
            names = [name for part in repeats for name in part.names]
            weights = source_weights([source_of.get(n, "") for n in names], ds.source_balance)
        train = EpochSample(train, ds.samples, data.seed, weights)
    held = FolderDataset(ds.root, val_names, data.size, 0.0, data.seed + 1, ds.transfer_prob,
                         data.on_error, framing=ds.framing)
    return train, held


def build_splits(config: TrainConfig) -> Splits:
    """The training dataset (every set's training part) and the held-out sets by name."""
    data = config.data
    train_parts: list[Dataset] = []
    val: dict[str, Dataset] = {}
    for ds in data.sets:
        if ds.kind == "folder":
            train, held = _folder_parts(ds, data)
        elif ds.kind == "iharmony4":
            one = IHarmony4Dataset(ds.root, "train", ds.subsets, data.size, data.hflip)
            train = ConcatDataset([one] * ds.repeat)
            held = IHarmony4Dataset(ds.root, "test", ds.subsets, data.size, 0.0)
        else:
            one = FFHQHDataset(ds.root, ds.real_root, "train", data.size, data.hflip)
            train = ConcatDataset([one] * ds.repeat)
            held = FFHQHDataset(ds.root, ds.real_root, "val", data.size, 0.0)
        train_parts.append(train)
        if config.train.val_limit and len(held) > config.train.val_limit:
            held = Subset(held, range(config.train.val_limit))
        val[set_name(ds)] = held
    return Splits(ConcatDataset(train_parts), val)
