"""Fixed train / held-out splits of the image folders, and what each photo's index says.

A folder set's ``index.tsv`` (tab-separated, a header row, the image name first) may
carry a ``person`` column (who the photo shows) and a ``source`` column (where it comes
from). Three split kinds:

- ``"scenes"`` / ``"random"``: photos shuffled with the seed, ``val_count`` held out;
- ``"person"``: by the ``person`` column (a folder without one: every photo is its own
  person), ``val_fraction`` of the photos held out, no person on both sides;
- ``"portraits"``: by person as :func:`person_of` reads the name (the portraits folder
  has no ``person`` column).

Splits depend on the set of names and the seed only, so training and evaluation see the
same held-out photos.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vcam_harmonize.models.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_KINDS = ("random", "scenes", "portraits", "person")


def stem(name: str) -> str:
    """``name`` without a known image extension."""
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else name


def image_stems(folder: Path) -> list[str]:
    """Sorted stems of the image files directly in ``folder``."""
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def read_index(root: str | Path) -> list[dict[str, str]] | None:
    """The rows of ``root/index.tsv`` as dicts keyed by the header, or None without one.

    A row with fewer fields than the header, a header without ``name``, or a name listed
    twice is an :class:`InputError` naming the file and line.
    """
    path = Path(root) / "index.tsv"
    if not path.is_file():
        return None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the index ({err}); fix or remove it") from None
    if not lines:
        raise InputError(f"{path}: the index is empty; it needs a header row and one row a photo")
    header = lines[0].split("\t")
    if header[0] != "name":
        raise InputError(f"{path}: the first column must be 'name', not {header[0]!r}")
    rows, seen = [], set()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < len(header):
            raise InputError(f"{path}: line {number} has {len(fields)} fields, the header "
                             f"{len(header)}; fix the row")
        row = dict(zip(header, fields[: len(header)], strict=True))
        if row["name"] in seen:
            raise InputError(f"{path}: line {number} names {row['name']!r} a second time")
        seen.add(row["name"])
        rows.append(row)
    return rows


def folder_names(root: str | Path) -> list[str]:
    """Names of a folder dataset: the first column of ``index.tsv``, else ``images/`` stems."""
    root = Path(root)
    rows = read_index(root)
    if rows is not None:
        names, where = [row["name"] for row in rows], root / "index.tsv"
    elif (root / "images").is_dir():
        names, where = image_stems(root / "images"), root / "images"
    else:
        raise InputError(f"{root} has neither index.tsv nor images/; check the path")
    if not names:
        raise InputError(f"{where} names no images; add photos (images/) and masks (masks/)")
    return names


def index_column(root: str | Path, column: str) -> dict[str, str]:
    """``name -> value`` of one ``index.tsv`` column; empty where the column is absent."""
    rows = read_index(root) or []
    return {row["name"]: row[column] for row in rows if column in row}


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
_PERSON = {name: group.split()[0] for group in _PORTRAIT_GROUPS for name in group.split()}
_VARIANT_SUFFIXES = ("_reflection", "-cropped")


def person_of(name: str) -> str:
    """Who a portrait shows, as an id shared by all photos of the same person.

    The rule, in order: drop the folder and image extension; drop a variant suffix of the
    same photo (``_reflection``, ``-cropped``); a photo of the known same-person groups
    maps to its group's first photo (``img11`` -> ``img1``); otherwise a trailing
    ``_<digits>`` or ``-<digits>`` counter is dropped (``anna_02`` -> ``anna``), and what
    is left is the person.
    """
    base = stem(Path(name).name)
    for suffix in _VARIANT_SUFFIXES:
        base = base.removesuffix(suffix)
    if base in _PERSON:
        return _PERSON[base]
    head, sep, tail = base.replace("-", "_").rpartition("_")
    return base[: len(head)] if sep and head and tail.isdigit() else base


def split_by_person(
    names: Sequence[str], person: Callable[[str], str], val_fraction: float, seed: int,
    where: str,
) -> tuple[list[str], list[str]]:
    """Train and validation names with no person on both sides.

    Persons are shuffled with ``seed`` and moved to validation while their photos fit in
    ``round(val_fraction * n)`` (at least one person).
    """
    by_person: dict[str, list[str]] = {}
    for name in names:
        by_person.setdefault(person(name), []).append(name)
    if len(by_person) < 2:
        raise InputError(f"{where} shows fewer than 2 persons; a person split needs more")
    persons = sorted(by_person)
    random.Random(seed).shuffle(persons)
    target = round(val_fraction * len(names))
    val: list[str] = []
    for who in persons:
        if len(val) + len(by_person[who]) <= target:
            val += by_person[who]
    val = val or by_person[persons[0]]
    taken = set(val)
    train = [name for name in names if name not in taken]
    return sorted(train), sorted(val)


def portrait_splits(
    root: str | Path, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Train and validation names of a portrait folder, split by :func:`person_of`."""
    return split_by_person(folder_names(root), person_of, val_fraction, seed, str(root))


def person_splits(
    root: str | Path, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Train and validation names split by the ``person`` column of ``index.tsv``; a
    folder without that column counts every photo as its own person."""
    persons = index_column(root, "person")
    return split_by_person(
        folder_names(root), lambda name: persons.get(name) or name, val_fraction, seed,
        str(root),
    )


def scene_splits(
    root: str | Path, val_count: int = 200, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Train and validation names of a scenes folder; ``val_count`` photos for validation."""
    names = folder_names(root)
    if not 0 < val_count < len(names):
        raise InputError(f"{root}: val_count must be between 1 and {len(names) - 1}, "
                         f"not {val_count}")
    train, val = split_names(names, (len(names) - val_count, val_count), seed)
    return train, val


def folder_splits(
    root: str | Path, kind: str, seed: int, val_count: int = 200, val_fraction: float = 0.2
) -> tuple[list[str], list[str]]:
    """The ``(train, val)`` names of a folder set by split ``kind`` (see the module
    docstring). An empty side is an :class:`InputError`."""
    if kind == "portraits":
        train, val = portrait_splits(root, val_fraction, seed)
    elif kind == "person":
        train, val = person_splits(root, val_fraction, seed)
    elif kind == "scenes":
        train, val = scene_splits(root, val_count, seed)
    elif kind == "random":
        train, val = scene_splits(root, min(val_count, len(folder_names(root)) - 1), seed)
    else:
        raise InputError(f"split must be one of {', '.join(SPLIT_KINDS)}, not {kind!r}")
    for side, names in (("training", train), ("held-out", val)):
        if not names:
            raise InputError(f"{root}: the {side} split is empty (split {kind!r}); "
                             f"add photos or change val_count / val_fraction")
    return train, val
