"""Build an FFHQH-style dataset (paper Sec. 3.2) from a folder of real portraits.

For each photo ``<src>/<name>``: a person mask (MediaPipe selfie segmentation, or the
user's matte ``<masks>/<stem>.*``), binarized at 0.5; a composite whose foreground is
recoloured by :func:`recipe.recolour_foreground`. Output, readable by
:class:`datasets.FFHQHDataset` with ``real_root=<src>``::

    <out>/comp/<name>.png   <out>/alpha/<name>.png (0/255)   (<name> without its suffix)
    <out>/{train,val,test}_split.txt    <out>/stats.json    <out>/stats.png

The run is resumable (photos whose two files exist are skipped; files are written under
a temporary name and renamed, so an interrupted run leaves nothing half-written) and
deterministic: a photo's composite depends only on ``seed`` and its name.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.training.datasets import (
    IMAGE_EXTENSIONS,
    find_image,
    image_to_tensor,
    mask_to_tensor,
    read_image,
    read_mask,
    resize,
)
from vcam_harmonize.training.recipe import recolour_foreground
from vcam_harmonize.training.splits import split_names

FFHQH_SPLIT = (60000, 5000, 5000)
SPLIT_NAMES = ("train", "val", "test")
_FG_BINS = 20


@dataclass(frozen=True)
class _Task:
    """One photo to turn into a composite and mask (picklable for worker processes)."""

    name: str
    real: Path
    matte: Path | None
    comp: Path
    alpha: Path
    seed: int
    size: int | None


@functools.lru_cache(maxsize=1)
def _segmenter():
    """MediaPipe's selfie segmenter (the general model the package bundles), one per
    process, through the Tasks API that every supported mediapipe has."""
    from importlib.resources import files

    from mediapipe.tasks.python import BaseOptions, vision

    model = files("vcam_harmonize") / "assets" / "segmentation" / "selfie_segmentation.tflite"
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        running_mode=vision.RunningMode.IMAGE, output_confidence_masks=True,
        output_category_mask=False)
    return vision.ImageSegmenter.create_from_options(options)


def person_mask(image: np.ndarray) -> np.ndarray:
    """Binary person mask ``(H, W)`` bool of an ``(H, W, 3)`` uint8 RGB photo (MediaPipe)."""
    import mediapipe as mp

    frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
    confidence = _segmenter().segment(frame).confidence_masks[0].numpy_view()
    return confidence.reshape(image.shape[:2]) > 0.5  # (H, W) or, from mediapipe 1.x, (H, W, 1)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 as PNG."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    _write_atomic(path, cv2.imencode(".png", pixels)[1].tobytes())


def _make(task: _Task) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``(H, W, 3)`` uint8 and mask ``(H, W)`` bool of one photo."""
    real = read_image(task.real)
    if task.size is not None:
        real = resize(real, task.size, task.size)
    height, width = real.shape[:2]
    if task.matte is None:
        mask = person_mask(real)
    else:
        mask = resize(read_mask(task.matte), width, height) > 0.5
    real_t, mask_t = image_to_tensor(real)[None], mask_to_tensor(mask.astype(np.float32))[None]
    comp = recolour_foreground(real_t, mask_t, seed=task.seed)[0]
    return (comp.permute(1, 2, 0) * 255.0).round().byte().numpy(), mask


def _image_stats(comp: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray | float]:
    """Brightness histogram (256 grey levels), foreground ratio and channel sums."""
    pixels = comp.reshape(-1, 3).astype(np.float64) / 255.0
    grey = cv2.cvtColor(comp, cv2.COLOR_RGB2GRAY)
    return {
        "brightness": np.bincount(grey.ravel(), minlength=256),
        "fg_ratio": float(mask.mean()),
        "sum": pixels.sum(0),
        "sum_sq": (pixels**2).sum(0),
        "pixels": float(len(pixels)),
    }


def _process(task: _Task) -> tuple[bool, dict]:
    """Build one photo's files unless both exist; ``(built, stats)``."""
    if task.comp.is_file() and task.alpha.is_file():
        comp, mask = read_image(task.comp), read_mask(task.alpha) > 0.5
        return False, _image_stats(comp, mask)
    comp, mask = _make(task)
    _write_png(task.alpha, mask.astype(np.uint8) * 255)
    _write_png(task.comp, comp)
    return True, _image_stats(comp, mask)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_all(tasks: list[_Task], workers: int) -> Iterator[tuple[bool, dict]]:
    """:func:`_process` on every task, in order, in ``workers`` processes (1: this one)."""
    if workers <= 1:
        yield from map(_process, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_process, tasks, chunksize=4)


def _photos(src: Path, out: Path) -> list[Path]:
    """Photos under ``src`` (recursively, leaving ``out`` out), relative to ``src``."""
    found = [
        path.relative_to(src)
        for path in src.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and out not in path.parents
    ]
    return sorted(found)


def _matte_of(masks: Path, rel: Path) -> Path:
    matte = find_image(masks / rel.parent, rel.stem)
    if matte is None:
        raise InputError(f"no matte for {rel} in {masks} (expected {rel.with_suffix('.png')})")
    return matte


def _tasks(src: Path, out: Path, masks: Path | None, seed: int, size: int | None) -> list[_Task]:
    tasks = []
    for rel in _photos(src, out):
        stored = rel.with_suffix(".png")
        for folder in ("comp", "alpha"):
            (out / folder / stored.parent).mkdir(parents=True, exist_ok=True)
        name_hash = zlib.crc32(rel.as_posix().encode())
        tasks.append(
            _Task(
                name=rel.as_posix(),
                real=src / rel,
                matte=None if masks is None else _matte_of(masks, rel),
                comp=out / "comp" / stored,
                alpha=out / "alpha" / stored,
                seed=int(np.random.SeedSequence([seed, name_hash]).generate_state(1)[0]),
                size=size,
            )
        )
    return tasks


def _summarise(results: list[tuple[bool, dict]]) -> dict:
    """stats.json's content from the per-photo ``(built, stats)``."""
    stats = [s for _, s in results]
    brightness = np.sum([s["brightness"] for s in stats], axis=0)
    fg_counts, fg_edges = np.histogram([s["fg_ratio"] for s in stats], _FG_BINS, (0.0, 1.0))
    pixels = sum(s["pixels"] for s in stats)
    mean = np.sum([s["sum"] for s in stats], axis=0) / pixels
    std = np.sqrt(np.sum([s["sum_sq"] for s in stats], axis=0) / pixels - mean**2)
    return {
        "images": len(results),
        "built": sum(built for built, _ in results),
        "skipped": sum(not built for built, _ in results),
        "brightness": {
            "histogram": brightness.tolist(),
            "bin_edges": list(range(257)),
            "mean": float((brightness * np.arange(256)).sum() / brightness.sum()),
        },
        "foreground_ratio": {
            "histogram": fg_counts.tolist(),
            "bin_edges": fg_edges.tolist(),
            "mean": float(np.mean([s["fg_ratio"] for s in stats])),
        },
        "channel_mean": mean.tolist(),
        "channel_std": std.tolist(),
    }


def _plot(summary: dict) -> bytes:
    """stats.png: the brightness and foreground-ratio histograms (as the paper's Fig. 1)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    brightness, foreground = figure.subplots(1, 2)
    brightness.bar(range(256), summary["brightness"]["histogram"], width=1.0)
    brightness.set(title="Pixel brightness", xlabel="grey level", ylabel="pixels")
    edges = summary["foreground_ratio"]["bin_edges"]
    foreground.bar(
        edges[:-1], summary["foreground_ratio"]["histogram"], width=np.diff(edges), align="edge"
    )
    foreground.set(title="Foreground area ratio", xlabel="ratio", ylabel="images")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def build_ffhqh(
    src_dir: str | Path,
    out_dir: str | Path,
    masks_dir: str | Path | None = None,
    workers: int = 1,
    seed: int = 0,
    size: int | None = None,
    split: Sequence[int] = FFHQH_SPLIT,
) -> dict:
    """Build (or finish) an FFHQH-style dataset; returns the content of stats.json.

    Args:
        src_dir: folder of real photos (searched recursively).
        out_dir: where comp/, alpha/, the split lists and the statistics go.
        masks_dir: user mattes named like the photos (any image type); None: MediaPipe.
        workers: processes; 1 runs in this process.
        seed: the recolouring and the split depend only on it and the names.
        size: resize every photo to ``size x size`` first (as the datasets do); None keeps
            the source size.
        split: train/val/test counts, scaled proportionally to the number of photos.

    stats.json describes the composites: a histogram of pixel brightness (256 grey
    levels), a histogram of the foreground ratio (20 bins over [0, 1]), and the RGB mean
    and std in [0, 1]; stats.png plots the two histograms (the paper's Fig. 1).
    """
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise InputError(f"split {tuple(split)} must be three train/val/test counts")
    src, out = Path(src_dir).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise InputError(f"photo folder {src} does not exist; pass --src a folder of portraits")
    masks = None if masks_dir is None else Path(masks_dir)
    if masks is not None and not masks.is_dir():
        raise InputError(f"matte folder {masks} does not exist; fix --masks or leave it out")
    tasks = _tasks(src, out, masks, seed, size)
    if not tasks:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {src}; add portraits")
    progress = tqdm(_run_all(tasks, workers), total=len(tasks), desc="FFHQH", unit="img")
    results = list(progress)
    fractions = [count / sum(split) for count in split]
    parts = split_names([task.name for task in tasks], fractions, seed)
    for part, names in zip(SPLIT_NAMES, parts, strict=True):
        _write_atomic(out / f"{part}_split.txt", "".join(f"{n}\n" for n in names).encode())
    summary = _summarise(results)
    _write_atomic(out / "stats.json", json.dumps(summary, indent=1).encode())
    _write_atomic(out / "stats.png", _plot(summary))
    return summary


def _run(args: argparse.Namespace) -> int:
    summary = build_ffhqh(args.src, args.out, args.masks, args.workers, args.seed, args.size)
    print(
        f"FFHQH: {summary['images']} images in {args.out} "
        f"({summary['built']} built, {summary['skipped']} already there)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``make-ffhqh`` subcommand; its ``func(args)`` returns the exit code."""
    parser = subparsers.add_parser(
        "make-ffhqh",
        help="build an FFHQH-style dataset from real portraits",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--src", required=True, type=Path, help="folder of real portraits")
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument(
        "--masks",
        type=Path,
        help="folder of person mattes named like the photos "
        "(default: MediaPipe selfie segmentation)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="recolouring/split seed")
    parser.add_argument("--size", type=int, help="resize photos to SIZE x SIZE first")
    parser.set_defaults(func=lambda args: _run(args))
