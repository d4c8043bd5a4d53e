"""A compact copy of the training folders for a GPU machine that takes at most 64 MiB.

Same names, masks and ``index.tsv``; the photos re-encoded as WebP at the highest quality
that keeps the whole copy under ``--budget-mb`` (photos larger than ``--max-side`` are
shrunk first, their masks alike, sides kept multiples of 8). The training recipe reads
the copy exactly as it reads the originals:

    python tools/compact_data.py --src ../shared/datasets --out .gpu/data --budget-mb 52
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

SETS = ("scenes", "people", "faces", "portraits")


def _shrink(image: np.ndarray, max_side: int, interpolation: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image
    size = (max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8))
    return cv2.resize(image, size, interpolation=interpolation)


def _encoded(src: Path, max_side: int) -> list[tuple[Path, np.ndarray, bytes]]:
    """Every set's photos (decoded, shrunk) and their masks (PNG bytes, shrunk alike)."""
    items = []
    for name in SETS:
        folder = src / name
        if not (folder / "images").is_dir():
            raise SystemExit(f"error: {folder}/images is missing; pass the datasets folder")
        for image_path in sorted((folder / "images").iterdir()):
            mask_path = folder / "masks" / f"{image_path.stem}.png"
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            if image is None or mask is None:
                raise SystemExit(f"error: cannot read {image_path} or {mask_path}")
            image = _shrink(image, max_side, cv2.INTER_AREA)
            mask = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            ok, png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            items.append((Path(name) / "images" / f"{image_path.stem}.webp", image,
                          png.tobytes()))
    return items


def _encode(items, quality: int) -> list[bytes]:
    return [cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])[1].tobytes()
            for _, image, _ in items]


def _copy_index(src: Path, dst: Path, name: str, sizes: dict) -> None:
    """Copy ``index.tsv``, its width and height columns set to the copy's sizes."""
    lines = src.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [lines[0]]
    for line in lines[1:]:
        fields = line.split("\t")
        if "width" in header and "height" in header and (name, fields[0]) in sizes:
            width, height = sizes[(name, fields[0])]
            fields[header.index("width")], fields[header.index("height")] = str(width), str(height)
        rows.append("\t".join(fields))
    dst.write_text("\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default="../shared/datasets")
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget-mb", type=float, default=52.0)
    parser.add_argument("--max-side", type=int, default=448)
    args = parser.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    items = _encoded(src, args.max_side)
    masks = sum(len(png) for _, _, png in items)
    budget = args.budget_mb * 2**20 - masks
    for quality in range(90, 29, -5):
        jpegs = _encode(items, quality)
        if sum(map(len, jpegs)) <= budget:
            break
    else:
        print(f"error: even quality 30 does not fit {args.budget_mb} MB; raise --budget-mb "
              f"or lower --max-side", file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)
    for (path, _, png), jpeg in zip(items, jpegs, strict=True):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (out / path.parent.parent / "masks").mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg)
        (out / path.parent.parent / "masks" / f"{path.stem}.png").write_bytes(png)
    sizes = {(str(path.parts[0]), path.stem): image.shape[1::-1] for path, image, _ in items}
    for name in SETS:
        _copy_index(src / name / "index.tsv", out / name / "index.tsv", name, sizes)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {len(items)} photos at WebP quality {quality}, {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
