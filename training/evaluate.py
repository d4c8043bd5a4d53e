"""Evaluation reports: the paper's Table 4 (per dataset) and Table 5 (per foreground
ratio) as Markdown and CSV, and a PNG grid of composite / prediction / truth.

Any number of predictors are compared on the same held-out data: weight files (ours
or the authors' released ``.pth``), ``composite`` (the input itself) and ``transfer``
(a classical masked mean/std colour transfer of the foreground to the background).
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vcam_harmonize.models import load_model
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.functional import masked_mean_std, reinhard_transfer
from vcam_harmonize.training.metrics import BUCKETS, MetricAccumulator, blend, image_metrics

logger = logging.getLogger(__name__)
Predictor = Callable[[Tensor, Tensor], Tensor]
METRICS = ("mse", "fmse", "psnr", "fpsnr")


def colour_transfer_baseline(comp: Tensor, mask: Tensor) -> Tensor:
    """Move the foreground's per-channel mean and std to the background's.

    comp ``(B, 3, H, W)``, mask ``(B, 1, H, W)`` -> ``(B, 3, H, W)`` in [0, 1].
    """
    fg_mean, fg_std = masked_mean_std(comp, mask)
    bg_mean, bg_std = masked_mean_std(comp, 1 - mask)
    return reinhard_transfer(comp, fg_mean, fg_std, bg_mean, bg_std).clamp(0, 1)


def make_predictor(spec: str, device: torch.device) -> Predictor:
    """``composite``, ``transfer`` or a weights file."""
    if spec == "composite":
        return lambda comp, mask: comp
    if spec == "transfer":
        return colour_transfer_baseline
    model = load_model(spec).to(device).eval()
    return lambda comp, mask: model(comp, mask).float()


@torch.no_grad()
def evaluate(predictors: dict[str, Predictor], datasets: dict[str, Dataset],
             device: torch.device, batch_size: int = 8, samples: int = 0,
             workers: int = 0) -> tuple[dict[str, MetricAccumulator], list]:
    """Score every predictor on every dataset in one pass over the data (each held-out
    composite is read and made once, whatever the number of predictors).

    Returns the accumulators by predictor label and ``samples`` example rows ``(comp,
    blended prediction, real)`` as HxWx3 uint8 arrays of the first predictor that is not
    ``composite``, the first images of each dataset in turn (shared out as evenly as the
    count allows)."""
    results = {label: MetricAccumulator() for label in predictors}
    shown_by = next((label for label in predictors if label != "composite"), None)
    examples: list = []
    for k, (name, dataset) in enumerate(datasets.items()):
        wanted = samples // len(datasets) + (k < samples % len(datasets))
        for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            comp, real, mask = (batch[key].to(device) for key in ("comp", "real", "mask"))
            for label, predictor in predictors.items():
                pred = predictor(comp, mask)
                results[label].add(name, image_metrics(pred, real, comp, mask))
                if label != shown_by or not wanted:
                    continue
                shown = blend(pred, comp, mask)
                for i in range(min(wanted, comp.shape[0])):
                    examples.append([to_uint8(t[i]) for t in (comp, shown, real)])
                wanted -= min(wanted, comp.shape[0])
    return results, examples


def to_uint8(image: Tensor) -> np.ndarray:
    """A ``(3, H, W)`` image in [0, 1] as ``(H, W, 3)`` uint8, rounded."""
    return (image.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


def _fmt(value: float, key: str) -> str:
    return f"{value:.2f}" if key in ("psnr", "fpsnr") else f"{value:.1f}"


def write_reports(results: dict[str, MetricAccumulator], out: Path) -> str:
    """Write ``metrics.md`` and ``metrics.csv`` (per dataset, per bucket); return the
    Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["## Per dataset (Table 4 layout)", "",
             "| dataset | predictor | images | MSE | fMSE | PSNR | fPSNR |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for predictor, acc in results.items():
        for dataset, means in acc.dataset_means().items():
            lines.append(f"| {dataset} | {predictor} | {means['count']} | "
                         + " | ".join(_fmt(means[k], k) for k in METRICS) + " |")
            rows.append({"table": "dataset", "dataset": dataset, "group": "all",
                         "predictor": predictor, "count": means["count"],
                         **{k: f"{means[k]:.6g}" for k in METRICS}})
    lines += ["", "## Per foreground ratio (Table 5 layout)", "",
              "| dataset | predictor | foreground | images | MSE | fMSE | PSNR | fPSNR |",
              "|---|---|---|---|---|---|---|---|"]
    for predictor, acc in results.items():
        for dataset in acc.dataset_means():
            buckets = acc.bucket_means(dataset)
            for bucket in BUCKETS:
                if bucket not in buckets:
                    continue
                means = buckets[bucket]
                lines.append(f"| {dataset} | {predictor} | {bucket} | {means['count']} | "
                             + " | ".join(_fmt(means[k], k) for k in METRICS) + " |")
                rows.append({"table": "bucket", "dataset": dataset, "group": bucket,
                             "predictor": predictor, "count": means["count"],
                             **{k: f"{means[k]:.6g}" for k in METRICS}})
    lines += against_composite(results)
    markdown = "\n".join(lines) + "\n"
    (out / "metrics.md").write_text(markdown)
    with open(out / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def against_composite(results: dict[str, MetricAccumulator]) -> list[str]:
    """Markdown lines: each predictor's fMSE as a multiple of the composite's and its PSNR
    gain over the composite, per dataset, and whether it beats the composite and the
    transfer baseline on all four metrics (empty without a ``composite`` run)."""
    if "composite" not in results:
        return []
    base = results["composite"].dataset_means()
    transfer = results["transfer"].dataset_means() if "transfer" in results else {}
    lines = ["", "## Against the composite", "",
             "| dataset | predictor | fMSE / composite's | PSNR gain (dB) | better than "
             "composite on all 4 | better than transfer on all 4 |",
             "|---|---|---|---|---|---|"]

    def beats(means: dict, other: dict | None) -> str:
        if other is None:
            return "-"
        better = [means[k] < other[k] if k.endswith("mse") else means[k] > other[k]
                  for k in METRICS]
        return "yes" if all(better) else "no"

    for predictor, acc in results.items():
        if predictor in ("composite", "transfer"):
            continue
        for dataset, means in acc.dataset_means().items():
            ratio = means["fmse"] / max(base[dataset]["fmse"], 1e-9)
            gain = means["psnr"] - base[dataset]["psnr"]
            lines.append(f"| {dataset} | {predictor} | {ratio:.2f}x | {gain:+.2f} | "
                         f"{beats(means, base[dataset])} | "
                         f"{beats(means, transfer.get(dataset))} |")
    return lines


def write_grid(examples: list, path: Path) -> None:
    """A PNG with one row per sample: composite | prediction | truth."""
    import cv2

    if not examples:
        return
    grid = np.concatenate([np.concatenate(row, axis=1) for row in examples], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    from vcam_harmonize.training.datasets import FFHQHDataset, IHarmony4Dataset

    sets: dict[str, Dataset] = {}
    if args.config:
        from vcam_harmonize.training.config import load_config
        from vcam_harmonize.training.datasets import build_splits

        config = load_config(args.config, args.set)
        config.data.size = args.size
        sets.update(build_splits(config).val)
    if args.iharmony4:
        for sub in args.subsets:
            if (Path(args.iharmony4) / sub).is_dir():
                sets[sub] = IHarmony4Dataset(args.iharmony4, "test", [sub], args.size)
    if args.ffhqh:
        if not args.ffhq:
            raise InputError("--ffhqh needs --ffhq, the folder of the real FFHQ images")
        sets["FFHQH"] = FFHQHDataset(args.ffhqh, args.ffhq, "test", args.size)
    if not sets:
        raise InputError("nothing to evaluate: give --config, --iharmony4 or --ffhqh")
    if args.limit:
        from torch.utils.data import Subset

        sets = {k: Subset(v, range(min(args.limit, len(v)))) for k, v in sets.items()}
    return sets


def run(args: argparse.Namespace,
         also: Callable[[str, str, torch.device], dict[str, Predictor]] | None = None) -> int:
    """The ``evaluate`` command; ``also(spec, label, device)`` may add predictors of its
    own beside each weights file (``tools/eval_camera.py`` adds the camera's path)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    datasets = _datasets(args)
    out = Path(args.out)
    predictors = {}
    for spec in args.weights:
        label = Path(spec).stem if spec not in ("composite", "transfer") else spec
        predictors[label] = make_predictor(spec, device)
        if also is not None and spec not in ("composite", "transfer"):
            predictors.update(also(spec, label, device))
    results, examples = evaluate(predictors, datasets, device, args.batch_size,
                                 args.samples, args.workers)
    if examples:
        out.mkdir(parents=True, exist_ok=True)
        write_grid(examples, out / "samples.png")
    print(write_reports(results, out), end="")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` command to ``subparsers``; returns its parser."""
    parser = subparsers.add_parser(
        "evaluate", help="metrics tables (Markdown, CSV) and a sample grid",
        description="Evaluate weight files (ours or the authors' .pth) and the baselines "
                    "'composite' and 'transfer' on held-out data.")
    parser.add_argument("--weights", action="append", required=True,
                        help="a weights file, 'composite' or 'transfer' (repeatable)")
    parser.add_argument("--config", help="use the held-out splits of this training config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--iharmony4", help="iHarmony4 root: test lists of each subset")
    parser.add_argument("--subsets", nargs="+",
                        default=["HCOCO", "HFlickr", "Hday2night", "HAdobe5k"])
    parser.add_argument("--ffhqh", help="FFHQH root (test_split.txt, comp/, alpha/)")
    parser.add_argument("--ffhq", help="folder of the real FFHQ images for --ffhqh")
    parser.add_argument("--size", type=int, default=256, help="square evaluation size")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per set")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0,
                        help="data-loading processes (0: load in this process)")
    parser.add_argument("--samples", type=int, default=6, help="rows in samples.png")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", required=True, help="folder for metrics.md/.csv, samples.png")
    parser.set_defaults(func=run)
    return parser
