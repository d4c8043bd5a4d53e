"""Training data: iHarmony4, FFHQH, and plain image+mask folders, plus fixed splits.

Every dataset returns samples ``{"comp": (3, S, S), "real": (3, S, S), "mask": (1, S, S),
"name": str}``: RGB floats in [0, 1] and a mask binarized at 0.5 after resizing (the paper
binarizes all masks, Appendix A). Images are read with OpenCV: greyscale becomes 3
channels, an alpha channel is dropped, 16-bit pixels are scaled to 8 bits.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.images import cover_crop, decode_file, header_size, read_image
from vcam_harmonize.training.recipe import colour_transfer, recolour_foreground

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
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


def _image_stems(folder: Path) -> list[str]:
    """Sorted stems of the image files directly in ``folder``."""
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _stem(name: str) -> str:
    """``name`` without a known image extension."""
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else name


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
    teaches the network to leave a harmonious person alone).
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
    ) -> None:
        if on_error not in ("skip", "stop"):
            raise InputError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
        if not 0 < crop_scale <= 1:
            raise InputError(f"crop_scale must be in (0, 1], got {crop_scale}")
        if not 0 <= global_colour <= 1:
            raise InputError(f"global_colour must be in [0, 1], got {global_colour}")
        if not 0 <= identity_prob < 1:
            raise InputError(f"identity_prob must be in [0, 1), got {identity_prob}")
        self.root = Path(root)
        self.size, self.hflip, self.seed, self.transfer_prob = size, hflip, seed, transfer_prob
        self.crop_scale, self.global_colour = crop_scale, global_colour
        self.identity_prob = identity_prob
        self.epoch = 0
        images, masks = self.root / "images", self.root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise InputError(f"{self.root} needs images/ and masks/ folders; check the path")
        if names is None:
            names = _image_stems(images)
        self.pairs: list[tuple[str, Path, Path]] = []
        for stem in map(_stem, names):
            problem, pair = self._check(stem)
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
        flip = bool(rng.random() < self.hflip)
        if self.identity_prob and rng.random() < self.identity_prob:
            comp = real.clone()  # already harmonious: the right answer is no change
        elif len(self) > 1 and rng.random() < self.transfer_prob:
            other = (index + int(rng.integers(1, len(self)))) % len(self)
            comp = colour_transfer(real, mask, *self._load(other))
        else:
            comp = recolour_foreground(real, mask, seed=int(rng.integers(2**31)))
        return _sample(comp[0], real[0], mask[0], self.pairs[index][0], flip)


def random_square_crop(
    image: np.ndarray, mask: np.ndarray, min_area: float, rng: np.random.Generator, tries: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop covering ``min_area`` to all of the largest square, at a
    random place. Crops that keep under 20% of the foreground are redrawn; after
    ``tries`` failures the largest square centred on the foreground is returned."""
    height, width = mask.shape[:2]
    full = min(height, width)
    total = float((mask > 127).sum())
    for _ in range(tries):
        side = max(8, int(round(full * np.sqrt(rng.uniform(min_area, 1.0)))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = mask[top : top + side, left : left + side]
        if total == 0 or (crop > 127).sum() >= 0.2 * total:
            return image[top : top + side, left : left + side], crop
    rows, cols = np.nonzero(mask > 127)
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


# ----------------------------------------------------------------------------- splits
def split_names(
    names: Sequence[str], parts: Sequence[float] | Sequence[int] = (0.9, 0.1), seed: int = 0
) -> list[list[str]]:
    """Shuffle ``names`` reproducibly and cut them into parts.

    ``parts`` are fractions (floats, summing to at most 1) or counts (ints, summing to at
    most ``len(names)``). The shuffle depends on the set of names and ``seed`` only, not on
    their order. Each part comes back sorted.
    """
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    if all(isinstance(p, int) for p in parts):
        bounds = np.cumsum(parts)
    elif all(isinstance(p, float) for p in parts) and sum(parts) <= 1.0 + 1e-9:
        bounds = np.round(np.cumsum(parts) * len(shuffled)).astype(int)
    else:
        raise InputError(f"split parts {tuple(parts)} must be all counts or fractions summing to 1")
    if bounds[-1] > len(shuffled) or min(parts) < 0:
        raise InputError(f"split {tuple(parts)} needs more than the {len(shuffled)} names given")
    starts = [0, *bounds[:-1]]
    return [sorted(shuffled[a:b]) for a, b in zip(starts, bounds, strict=True)]


# Same-person groups of the portraits folder (deepface's test photos), from deepface's
# verification pair lists (tests/unit/dataset/master.csv, tests/dataset/
# face-recognition-pivot.csv); "target", "couple" and "selfie-many-people" show the person
# of img1 (checked by eye). Each group is named by its first photo.
_PORTRAIT_GROUPS = (
    "img1 img2 img4 img5 img6 img7 img10 img11 target couple selfie-many-people",
    "img3 img12 img53 img54 img55 img56",
    "img8 img9 img47 img48 img49 img50 img51",
    "img13 img14 img15 img57 img58",
    "img16 img17 img59 img61 img62",
    "img18 img19 img67",
    "img20 img21",
    "img22 img23 img63 img64 img65 img66",
    "img24 img25",
    "img26 img27 img28 img42 img43 img44 img45 img46",
    "img29 img30 img31 img32 img33",
    "img34 img35 img36 img37",
    "img38 img39 img40 img41",
)
_PERSON = {stem: group.split()[0] for group in _PORTRAIT_GROUPS for stem in group.split()}
_VARIANT_SUFFIXES = ("_reflection", "-cropped")


def person_of(name: str) -> str:
    """Who a portrait shows, as an id shared by all photos of the same person.

    The rule, in order: drop the folder and image extension; drop a variant suffix of the
    same photo (``_reflection``, ``-cropped``); a photo of the known same-person groups
    maps to its group's first photo (``img11`` -> ``img1``); otherwise a trailing
    ``_<digits>`` or ``-<digits>`` counter is dropped (``anna_02`` -> ``anna``), and what
    is left is the person.
    """
    stem = _stem(Path(name).name)
    for suffix in _VARIANT_SUFFIXES:
        stem = stem.removesuffix(suffix)
    if stem in _PERSON:
        return _PERSON[stem]
    head, sep, tail = stem.replace("-", "_").rpartition("_")
    return stem[: len(head)] if sep and head and tail.isdigit() else stem


def folder_names(root: str | Path) -> list[str]:
    """Names of a folder dataset: the first column of ``index.tsv``, else ``images/`` stems."""
    root = Path(root)
    index = root / "index.tsv"
    if index.is_file():
        rows = [line.split("\t")[0] for line in index.read_text().splitlines()[1:]]
        names, where = [row for row in rows if row], index
    elif (root / "images").is_dir():
        names, where = _image_stems(root / "images"), root / "images"
    else:
        raise InputError(f"{root} has neither index.tsv nor images/; check the path")
    if not names:
        raise InputError(f"{where} names no images; add photos (images/) and masks (masks/)")
    return names


def portrait_splits(
    root: str | Path, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Train and validation names of a portrait folder, split by person (:func:`person_of`).

    Persons are shuffled with ``seed`` and moved to validation while their photos fit in
    ``round(val_fraction * n)`` (at least one person), so no person is in both parts.
    """
    by_person: dict[str, list[str]] = {}
    for name in folder_names(root):
        by_person.setdefault(person_of(name), []).append(name)
    if len(by_person) < 2:
        raise InputError(f"{root} shows fewer than 2 persons; a person split needs more")
    persons = sorted(by_person)
    random.Random(seed).shuffle(persons)
    target = round(val_fraction * sum(map(len, by_person.values())))
    val: list[str] = []
    for person in persons:
        if len(val) + len(by_person[person]) <= target:
            val += by_person[person]
    val = val or by_person[persons[0]]
    taken = set(val)
    train = [name for names in by_person.values() for name in names if name not in taken]
    return sorted(train), sorted(val)


def scene_splits(
    root: str | Path, val_count: int = 200, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Train and validation names of a scenes folder; ``val_count`` photos for validation."""
    names = folder_names(root)
    if not 0 < val_count < len(names):
        raise InputError(f"val_count must be between 1 and {len(names) - 1}, not {val_count}")
    train, val = split_names(names, (len(names) - val_count, val_count), seed)
    return train, val
