"""`evaluate` on a tiny iHarmony4 in the authors' layout, with weights in the authors'
released .pth format and the two baselines; the numbers are checked by hand."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vcam_harmonize.models import PHNet, PHNetConfig
from vcam_harmonize.models.checkpoint import to_authors_state_dict
from vcam_harmonize.training import cli

SIZE = 32
# (subset, base name, mask box (top, left, height, width)): foreground 4 %, 9.8 %, 25 %
IMAGES = [
    ("HFlickr", "f1", (4, 6, 5, 8)),
    ("HFlickr", "f2", (10, 10, 10, 10)),
    ("Hday2night", "d90000002-26", (8, 8, 16, 16)),
]


def _photo(seed: int) -> np.ndarray:
    """A smooth RGB 'photo' (gradients and a blob), uint8 SIZE x SIZE x 3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    channels = [rng.uniform(40, 120) + rng.uniform(-60, 60) * x + rng.uniform(-60, 60) * y
                + 40 * np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) * 8) for _ in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


@pytest.fixture
def iharmony(tmp_path) -> Path:
    """<root>/<Sub>/{composite_images,masks,real_images} and <Sub>_test.txt, as released."""
    root = tmp_path / "iHarmony4"
    lines: dict[str, list[str]] = {}
    for k, (sub, base, (top, left, h, w)) in enumerate(IMAGES):
        for folder in ("composite_images", "masks", "real_images"):
            (root / sub / folder).mkdir(parents=True, exist_ok=True)
        real = _photo(k)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[top:top + h, left:left + w] = 255
        comp = real.astype(int)
        comp[mask > 0] = comp[mask > 0] * [1.3, 0.8, 0.9] + [10, -5, 20]  # a colour cast
        comp = np.clip(comp, 0, 255).astype(np.uint8)
        name = f"{base}_1_{k + 1}.jpg"
        cv2.imwrite(str(root / sub / "real_images" / f"{base}.jpg"), real[..., ::-1])
        cv2.imwrite(str(root / sub / "masks" / f"{base}_1.png"), mask)
        cv2.imwrite(str(root / sub / "composite_images" / name), comp[..., ::-1])
        lines.setdefault(sub, []).append(name)
    for sub, names in lines.items():
        (root / sub / f"{sub}_test.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def _decoded(root: Path) -> list[dict]:
    """Each test image as the files hold it (RGB float 0..255) with its binary mask."""
    samples = []
    for k, (sub, base, _) in enumerate(IMAGES):
        folder = root / sub
        comp = cv2.imread(str(folder / "composite_images" / f"{base}_1_{k + 1}.jpg"))[..., ::-1]
        real = cv2.imread(str(folder / "real_images" / f"{base}.jpg"))[..., ::-1]
        mask = cv2.imread(str(folder / "masks" / f"{base}_1.png"), cv2.IMREAD_GRAYSCALE) > 127
        samples.append({"sub": sub, "comp": comp.astype(np.float64),
                        "real": real.astype(np.float64), "mask": mask})
    return samples


def _scores(pred: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MSE, fMSE (Eq. 16), PSNR and fPSNR with MAX = max(real), on 0..255 images; ``pred``
    is already blended over the composite."""
    mse = ((pred - real) ** 2).mean()
    fmse = ((pred - real) ** 2)[mask].sum() / (3 * mask.sum() + 1e-6)
    peak = real.max()
    return {"mse": mse, "fmse": fmse, "psnr": 10 * np.log10(peak**2 / (mse + 1e-6)),
            "fpsnr": 10 * np.log10(peak**2 / (fmse + 1e-6))}


def _transfer(comp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Foreground mean/std moved to the background's, per channel (0..1 scale)."""
    image = comp / 255.0
    fg, bg = image[mask], image[~mask]
    out = (image - fg.mean(0)) / fg.std(0) * bg.std(0) + bg.mean(0)
    out = np.clip(out, 0, 1) * 255.0
    return np.where(mask[..., None], out, comp)


def _means(samples: list[dict], predict) -> dict[str, dict[str, float]]:
    """Mean scores per subset and per foreground bucket."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        ratio = s["mask"].mean()
        bucket = "<5%" if ratio < 0.05 else "5-15%" if ratio < 0.15 else ">=15%"
        scores = _scores(predict(s), s["real"], s["mask"])
        groups.setdefault(("dataset", s["sub"], "all"), []).append(scores)
        groups.setdefault(("bucket", s["sub"], bucket), []).append(scores)
    return {key: {m: np.mean([r[m] for r in rows]) for m in rows[0]} | {"count": len(rows)}
            for key, rows in groups.items()}


def test_evaluate_on_the_authors_layout_with_released_weights_and_baselines(iharmony, tmp_path):
    torch.manual_seed(0)
    model = PHNet(PHNetConfig(widths=(8, 8, 16, 16, 32, 32), grids=(4, 2, 1), pfe_grid=2)).eval()
    weights = tmp_path / "best_tiny.pth"
    torch.save(to_authors_state_dict(model), weights)  # the released files' format
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--iharmony4", str(iharmony), "--weights", str(weights),
                     "--weights", "composite", "--weights", "transfer", "--size", str(SIZE),
                     "--samples", "3", "--out", str(out)]) == 0

    samples = _decoded(iharmony)

    def network(s):
        comp = torch.from_numpy(s["comp"] / 255).permute(2, 0, 1)[None].float()
        mask = torch.from_numpy(s["mask"])[None, None].float()
        with torch.no_grad():
            pred = model(comp, mask)[0].permute(1, 2, 0).double().numpy() * 255
        return np.where(s["mask"][..., None], pred, s["comp"])

    expected = {
        "best_tiny": _means(samples, network),
        "composite": _means(samples, lambda s: s["comp"]),
        "transfer": _means(samples, lambda s: _transfer(s["comp"], s["mask"])),
    }
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    got = {(r["predictor"], r["table"], r["dataset"], r["group"]): r for r in rows}
    assert len(rows) == 3 * (2 + 3)  # predictors x (subsets + subset/bucket groups)
    for predictor, table in expected.items():
        assert {key for key in got if key[0] == predictor} == {(predictor, *k) for k in table}
        for key, means in table.items():
            row = got[(predictor, *key)]
            assert int(row["count"]) == means["count"]
            for metric in ("mse", "fmse", "psnr", "fpsnr"):
                assert float(row[metric]) == pytest.approx(means[metric], rel=1e-4, abs=1e-3)
    # the composite's own error is what the colour cast put there, e.g. fMSE of one image
    first = samples[0]
    cast = ((first["comp"] - first["real"]) ** 2)[first["mask"]].sum() / (3 * first["mask"].sum())
    assert float(got[("composite", "bucket", "HFlickr", "<5%")]["fmse"]) == pytest.approx(
        cast, rel=1e-5)
    assert cast > 100

    markdown = (out / "metrics.md").read_text()
    assert "## Per dataset (Table 4 layout)" in markdown
    assert "## Per foreground ratio (Table 5 layout)" in markdown
    composite = expected["composite"][("dataset", "Hday2night", "all")]
    assert (f"| Hday2night | composite | 1 | {composite['mse']:.1f} | {composite['fmse']:.1f} | "
            f"{composite['psnr']:.2f} | {composite['fpsnr']:.2f} |") in markdown
    assert "| HFlickr | best_tiny | 5-15% | 1 |" in markdown

    # samples.png: one row per sample (2 of HFlickr, 1 of Hday2night), three panels each
    grid = cv2.imread(str(out / "samples.png"))[..., ::-1]
    assert grid.shape == (3 * SIZE, 3 * SIZE, 3)
    for row, s in zip(range(3), [samples[0], samples[1], samples[2]], strict=True):
        panels = grid[row * SIZE:(row + 1) * SIZE].reshape(SIZE, 3, SIZE, 3).swapaxes(0, 1)
        assert np.abs(panels[0] - s["comp"]).max() <= 1  # composite
        assert np.abs(panels[1] - network(s)).max() <= 1  # the network's prediction
        assert np.abs(panels[2] - s["real"]).max() <= 1  # truth

    # against the composite: the ratio and the gain, computed from the same means
    net = expected["best_tiny"][("dataset", "HFlickr", "all")]
    base = expected["composite"][("dataset", "HFlickr", "all")]
    assert "## Against the composite" in markdown
    assert (f"| HFlickr | best_tiny | {net['fmse'] / base['fmse']:.2f}x | "
            f"{net['psnr'] - base['psnr']:+.2f} |") in markdown

