"""The FFHQH builder on a few real portraits."""

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.training.datasets import FFHQHDataset, read_image, read_mask, resize
from vcam_harmonize.training.make_ffhqh import build_ffhqh, register

PORTRAITS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "portraits"
NAMES = ["img1", "img3", "img12", "couple"]
SIZE = 64


@pytest.fixture
def photos(tmp_path):
    """4 portraits and their masks, copied to tmp_path/src and tmp_path/mattes."""
    if not PORTRAITS.is_dir():
        pytest.skip(f"no shared portraits at {PORTRAITS}")
    (tmp_path / "src").mkdir()
    (tmp_path / "mattes").mkdir()
    for name in NAMES:
        shutil.copy(PORTRAITS / "images" / f"{name}.jpg", tmp_path / "src")
        shutil.copy(PORTRAITS / "masks" / f"{name}.png", tmp_path / "mattes")
    return tmp_path


def _expected_mask(matte: Path) -> np.ndarray:
    return resize(read_mask(matte), SIZE, SIZE) > 0.5


def test_build_with_given_mattes(photos):
    out = photos / "out"
    stats = build_ffhqh(photos / "src", out, photos / "mattes", size=SIZE, seed=1)
    assert (stats["images"], stats["built"], stats["skipped"]) == (4, 4, 0)
    fg_ratios, pixels = [], []
    for name in NAMES:
        alpha = cv2.imread(str(out / "alpha" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert alpha.shape == (SIZE, SIZE) and set(np.unique(alpha)) == {0, 255}
        mask = _expected_mask(photos / "mattes" / f"{name}.png")
        assert np.array_equal(alpha == 255, mask)
        comp = read_image(out / "comp" / f"{name}.png")
        real = resize(read_image(photos / "src" / f"{name}.jpg"), SIZE, SIZE)
        assert np.array_equal(comp[~mask], real[~mask])  # background untouched
        assert (comp[mask] != real[mask]).any(1).mean() > 0.5
        fg_ratios.append(mask.mean())
        pixels.append(comp.reshape(-1, 3) / 255.0)
    splits = {p: (out / f"{p}_split.txt").read_text().split() for p in ("train", "val", "test")}
    # 60000/5000/5000 scaled to 4 photos: cumulative rounding gives 3 / 1 / 0
    assert [len(splits[p]) for p in ("train", "val", "test")] == [3, 1, 0]
    assert sorted(splits["train"] + splits["val"]) == sorted(f"{n}.jpg" for n in NAMES)
    saved = json.loads((out / "stats.json").read_text())
    assert saved == stats
    assert stats["foreground_ratio"]["mean"] == pytest.approx(np.mean(fg_ratios))
    assert sum(stats["foreground_ratio"]["histogram"]) == 4
    assert sum(stats["brightness"]["histogram"]) == 4 * SIZE * SIZE
    assert stats["channel_mean"] == pytest.approx(np.concatenate(pixels).mean(0).tolist())
    assert stats["channel_std"] == pytest.approx(np.concatenate(pixels).std(0).tolist())
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"
    sample = FFHQHDataset(out, photos / "src", "train", size=SIZE)[0]
    background = sample["mask"][0] == 0
    assert (sample["comp"][:, background] == sample["real"][:, background]).all()


def test_build_resumes_and_is_deterministic(photos):
    out = photos / "out"
    build_ffhqh(photos / "src", out, photos / "mattes", size=SIZE)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "comp").iterdir()}
    kept = (out / "comp" / "img3.png").read_bytes()
    (out / "comp" / "img3.png").unlink()
    stats = build_ffhqh(photos / "src", out, photos / "mattes", size=SIZE)
    assert (stats["built"], stats["skipped"]) == (1, 3)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "comp").iterdir()}
    assert {n: t for n, t in after.items() if n != "img3.png"} == {
        n: t for n, t in before.items() if n != "img3.png"
    }
    assert (out / "comp" / "img3.png").read_bytes() == kept
    assert not list(out.rglob("*.part"))


def test_build_with_mediapipe_masks(photos):
    for name in NAMES[2:]:
        (photos / "src" / f"{name}.jpg").unlink()
    out = photos / "out"
    stats = build_ffhqh(photos / "src", out, size=128)
    assert stats["built"] == 2
    for name in NAMES[:2]:
        alpha = read_mask(out / "alpha" / f"{name}.png") > 0.5
        shipped = resize(read_mask(photos / "mattes" / f"{name}.png"), 128, 128) > 0.5
        assert (alpha == shipped).mean() > 0.97  # the shipped masks are MediaPipe's too


def test_build_refuses_bad_folders(tmp_path, photos):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(InputError, match="no images"):
        build_ffhqh(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        build_ffhqh(tmp_path / "nowhere", tmp_path / "out")
    (photos / "mattes" / "img3.png").unlink()
    with pytest.raises(InputError, match="no matte for img3.jpg"):
        build_ffhqh(photos / "src", photos / "out", photos / "mattes")


def test_make_ffhqh_subcommand(photos, capsys):
    parser = argparse.ArgumentParser(prog="train")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["make-ffhqh", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--src", "--out", "--masks", "--workers", "--seed", "--size"):
        assert option in help_text
    out = photos / "cli-out"
    args = parser.parse_args(
        ["make-ffhqh", "--src", str(photos / "src"), "--out", str(out)]
        + ["--masks", str(photos / "mattes"), "--size", "32", "--workers", "2", "--seed", "4"]
    )
    assert args.func(args) == 0
    assert "4 images" in capsys.readouterr().out
    assert read_image(out / "comp" / "img1.png").shape == (32, 32, 3)
