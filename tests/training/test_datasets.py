"""Dataset loaders on tiny fixture folders in their real layouts, and on the shared data."""

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vcam_harmonize.models.errors import InputError
from vcam_harmonize.training.datasets import (
    FFHQHDataset,
    FolderDataset,
    IHarmony4Dataset,
    global_recolour,
    random_square_crop,
    read_image,
    read_mask,
    recolour_backdrop,
)
from vcam_harmonize.training.splits import person_of, portrait_splits, scene_splits, split_names

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
SCENES, PORTRAITS = SHARED / "scenes", SHARED / "portraits"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")

RED, BLUE = (200, 30, 10), (10, 40, 220)  # RGB


def _solid(height: int, width: int, rgb) -> np.ndarray:
    """A BGR image of one colour, for cv2.imwrite."""
    return np.full((height, width, 3), rgb[::-1], np.uint8)


def _left_half(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return mask


def _iharmony_subset(root: Path, sub: str, base: str, split_lines: dict[str, list[str]]) -> None:
    """One real photo (red), its mask (left half) and blue-foreground composites."""
    for folder in ("composite_images", "masks", "real_images"):
        (root / sub / folder).mkdir(parents=True)
    cv2.imwrite(str(root / sub / "real_images" / f"{base}.jpg"), _solid(30, 40, RED))
    cv2.imwrite(str(root / sub / "masks" / f"{base}_1.png"), _left_half(30, 40))
    comp = _solid(30, 40, RED)
    comp[:, :20] = BLUE[::-1]
    for split, lines in split_lines.items():
        for line in lines:
            cv2.imwrite(str(root / sub / "composite_images" / line), comp)
        (root / sub / f"{sub}_{split}.txt").write_text("".join(f"{n}\n" for n in lines))


@pytest.fixture
def iharmony(tmp_path):
    _iharmony_subset(
        tmp_path, "HFlickr", "f1", {"train": ["f1_1_1.jpg", "f1_1_2.jpg"], "test": ["f1_1_3.jpg"]}
    )
    _iharmony_subset(tmp_path, "Hday2night", "d90000002-26", {"train": ["d90000002-26_1_1.jpg"]})
    return tmp_path


def test_iharmony4_reads_the_present_subsets(iharmony):
    data = IHarmony4Dataset(iharmony, "train", size=16)
    assert len(data) == 3
    sample = data[0]
    assert sample["name"] == "HFlickr/f1_1_1.jpg"
    assert sample["comp"].shape == sample["real"].shape == (3, 16, 16)
    assert sample["mask"].shape == (1, 16, 16)
    assert sample["mask"][0, :, :8].eq(1).all() and sample["mask"][0, :, 8:].eq(0).all()
    red, blue = torch.tensor(RED) / 255, torch.tensor(BLUE) / 255
    assert torch.allclose(sample["real"][:, 4, 4], red, atol=3 / 255)
    assert torch.allclose(sample["comp"][:, 4, 4], blue, atol=3 / 255)
    assert torch.allclose(sample["comp"][:, 4, 12], red, atol=3 / 255)
    assert data[2]["name"] == "Hday2night/d90000002-26_1_1.jpg"


def test_iharmony4_flip_and_split_errors(iharmony):
    flipped = IHarmony4Dataset(iharmony, "test", subsets=("HFlickr",), size=16, hflip=1.0)[0]
    assert flipped["mask"][0, :, 8:].eq(1).all() and flipped["mask"][0, :, :8].eq(0).all()
    with pytest.raises(InputError, match="Hday2night_test.txt"):
        IHarmony4Dataset(iharmony, "test")  # Hday2night has no test list
    with pytest.raises(InputError, match="no iHarmony4 subset"):
        IHarmony4Dataset(iharmony / "HFlickr", "train")
    with pytest.raises(InputError, match="'train' or 'test'"):
        IHarmony4Dataset(iharmony, "val")


@pytest.fixture
def ffhqh(tmp_path):
    root, real_root = tmp_path / "ffhqh", tmp_path / "ffhq"
    for folder in (root / "comp", root / "alpha", real_root):
        folder.mkdir(parents=True)
    cv2.imwrite(str(real_root / "00001.png"), _solid(8, 8, RED))
    cv2.imwrite(str(root / "comp" / "00001.png"), _solid(8, 8, BLUE))
    alpha = np.full((8, 8), 100, np.uint8)
    alpha[:, 5:] = 200  # soft alpha: > 0.5 only in the last three columns
    cv2.imwrite(str(root / "alpha" / "00001.png"), alpha)
    (root / "train_split.txt").write_text("00001.png\n")
    return root, real_root


def test_ffhqh_reads_comp_alpha_and_the_ffhq_photo(ffhqh):
    root, real_root = ffhqh
    sample = FFHQHDataset(root, real_root, "train", size=8)[0]
    assert sample["name"] == "00001.png"
    assert sample["real"][:, 0, 0].mul(255).round().tolist() == list(RED)
    assert sample["comp"][:, 0, 0].mul(255).round().tolist() == list(BLUE)
    assert sample["mask"][0, 0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert FFHQHDataset(root, real_root, "train", size=4)[0]["mask"].shape == (1, 4, 4)
    with pytest.raises(InputError, match="val_split.txt"):
        FFHQHDataset(root, real_root, "val")


def test_read_image_converts_grey_rgba_and_16_bit(tmp_path):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((2, 3), 77, np.uint8))
    assert read_image(grey).shape == (2, 3, 3) and read_image(grey).max() == 77
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.dstack([_solid(2, 2, RED), np.zeros((2, 2), np.uint8)]))
    assert read_image(rgba)[0, 0].tolist() == list(RED)
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.full((2, 2, 3), [65535, 257 * 100, 0], np.uint16))
    assert read_image(deep)[0, 0].tolist() == [0, 100, 255]  # BGR file -> RGB
    cv2.imwrite(str(deep), np.full((2, 2), 65535, np.uint16))
    assert read_mask(deep).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.jpg"):
        read_image(broken)
    with pytest.raises(InputError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


SCENE_NAMES = ["image_100005", "image_100018", "image_100022", "image_100030"]


@needs_shared
def test_folder_dataset_on_real_scenes_is_reproducible():
    data = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3)
    assert data.names == SCENE_NAMES
    sample = data[2]
    assert sample["comp"].shape == (3, 64, 64) and sample["mask"].shape == (1, 64, 64)
    assert set(sample["mask"].unique().tolist()) == {0.0, 1.0}
    background = sample["mask"][0] == 0
    assert torch.equal(sample["comp"][:, background], sample["real"][:, background])
    assert (sample["comp"] != sample["real"]).any(0)[~background].float().mean() > 0.5
    assert torch.equal(data[2]["comp"], sample["comp"])
    data.set_epoch(1)
    assert not torch.equal(data[2]["comp"], sample["comp"])
    assert not torch.equal(FolderDataset(SCENES, SCENE_NAMES, size=64, seed=4)[2]["comp"],
                           sample["comp"])  # fmt: skip


@needs_shared
def test_folder_dataset_colour_transfer_and_cover_crop():
    sample = FolderDataset(SCENES, SCENE_NAMES, size=32, transfer_prob=1.0)[0]
    background = sample["mask"][0] == 0
    assert torch.equal(sample["comp"][:, background], sample["real"][:, background])
    assert not torch.equal(sample["comp"], sample["real"])
    portrait = FolderDataset(PORTRAITS, ["img1"], size=64)[0]  # 376 x 512 photo
    assert portrait["real"].shape == (3, 64, 64)
    image = read_image(PORTRAITS / "images" / "img1.jpg")  # centre crop of the tall photo
    top = (512 * 64 // 376 - 64) // 2
    expected = cv2.resize(image, (64, 512 * 64 // 376), interpolation=cv2.INTER_AREA)[top]
    assert np.abs(portrait["real"][:, 0].permute(1, 0).numpy() * 255 - expected).max() < 0.01


@pytest.fixture
def broken_folder(tmp_path):
    if not SCENES.is_dir():
        pytest.skip(f"no shared scenes at {SCENES}")
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for name in SCENE_NAMES[:3]:
        shutil.copy(SCENES / "images" / f"{name}.jpg", tmp_path / "images")
        shutil.copy(SCENES / "masks" / f"{name}.png", tmp_path / "masks")
    (tmp_path / "masks" / f"{SCENE_NAMES[0]}.png").unlink()
    mask = cv2.imread(str(tmp_path / "masks" / f"{SCENE_NAMES[1]}.png"))
    cv2.imwrite(str(tmp_path / "masks" / f"{SCENE_NAMES[1]}.png"), cv2.resize(mask, (128, 100)))
    return tmp_path


def test_folder_dataset_skips_and_reports_bad_files(broken_folder, caplog):
    with caplog.at_level(logging.WARNING):
        data = FolderDataset(broken_folder, size=32)
    assert data.names == [SCENE_NAMES[2]]
    text = caplog.text
    assert f"{SCENE_NAMES[0]}.jpg: no mask" in text
    assert f"{SCENE_NAMES[1]}.jpg: image is (256, 256)" in text and "(128, 100)" in text


def test_folder_dataset_skips_an_image_whose_header_is_cut_short(tmp_path, caplog):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "images" / "good.png"), _solid(30, 40, RED))
    cv2.imwrite(str(tmp_path / "masks" / "good.png"), _left_half(30, 40))
    (tmp_path / "images" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d")
    cv2.imwrite(str(tmp_path / "masks" / "cut.png"), _left_half(30, 40))
    with caplog.at_level(logging.WARNING):
        data = FolderDataset(tmp_path, size=16)
    assert data.names == ["good"]
    assert "cut.png" in caplog.text
    with pytest.raises(InputError, match="cut.png"):
        FolderDataset(tmp_path, on_error="stop")


def test_folder_dataset_stops_on_bad_files_when_asked(broken_folder):
    with pytest.raises(InputError, match=f"{SCENE_NAMES[0]}.jpg: no mask"):
        FolderDataset(broken_folder, on_error="stop")


def test_folder_dataset_refuses_an_empty_folder(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    with pytest.raises(InputError, match="no usable image"):
        FolderDataset(tmp_path)
    with pytest.raises(InputError, match="images/ and masks/"):
        FolderDataset(tmp_path / "images")


def test_split_names_by_fraction_and_count():
    names = [f"n{i}" for i in range(10)]
    train, val = split_names(names, (0.8, 0.2), seed=1)
    assert len(train) == 8 and len(val) == 2 and set(train) | set(val) == set(names)
    assert split_names(list(reversed(names)), (0.8, 0.2), seed=1) == [train, val]
    assert split_names(names, (0.8, 0.2), seed=2) != [train, val]
    parts = split_names(names, (6, 3, 1), seed=0)
    assert [len(p) for p in parts] == [6, 3, 1]
    assert len(split_names(names, (4, 3), seed=0)[1]) == 3  # counts may leave names out
    with pytest.raises(InputError):
        split_names(names, (8, 5))
    with pytest.raises(InputError):
        split_names(names, (0.9, 0.3))


def test_person_of_groups_photos_of_one_person():
    assert person_of("img11_reflection.jpg") == person_of("img11") == person_of("img2") == "img1"
    assert person_of("couple") == person_of("selfie-many-people.jpg") == "img1"
    assert person_of("img59.jpg") == "img16"
    assert person_of("img4-cropped.jpg") == "img1"
    assert person_of("anna_02.jpg") == person_of("anna-3.png") == "anna"
    assert person_of("img52") == "img52" and person_of("00609.png") == "00609"


@needs_shared
def test_portrait_split_has_no_person_in_both_parts():
    train, val = portrait_splits(PORTRAITS, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == 65 and not set(train) & set(val)
    assert 8 <= len(val) <= 13
    assert not {person_of(n) for n in train} & {person_of(n) for n in val}
    assert portrait_splits(PORTRAITS, 0.2, seed=0) == (train, val)


@needs_shared
def test_scene_split_holds_out_a_fixed_count():
    train, val = scene_splits(SCENES, val_count=200, seed=0)
    assert len(val) == 200 and len(train) == 1598 and not set(train) & set(val)
    with pytest.raises(InputError):
        scene_splits(SCENES, val_count=5000)


def test_recolour_backdrop_changes_the_background_only():
    real = torch.rand(1, 3, 16, 24) * 0.8 + 0.1
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., 4:12, 6:18] = 1.0
    mask[..., 4:12, 5] = 0.5  # a soft edge
    out = recolour_backdrop(real, mask, np.random.default_rng(3))
    assert out.shape == real.shape and out.min() >= 0 and out.max() <= 1
    person = mask[0, 0] == 1
    assert torch.equal(out[:, :, person], real[:, :, person])
    background = mask[0, 0] == 0
    assert (out[:, :, background] - real[:, :, background]).abs().mean() > 0.02
    edge = out[..., 4:12, 5]  # halfway between the person's colour and the new backdrop's
    backdrop = recolour_backdrop(real, torch.zeros_like(mask), np.random.default_rng(3))
    torch.testing.assert_close(edge, (real[..., 4:12, 5] + backdrop[..., 4:12, 5]) / 2)


@needs_shared
def test_backdrop_colour_keeps_the_person_of_the_photo():
    plain = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3, identity_prob=0.999)
    recoloured = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3, identity_prob=0.999,
                               backdrop_colour=1.0)
    before, after = plain[1], recoloured[1]
    person = before["mask"][0] == 1
    background = before["mask"][0] == 0
    assert torch.equal(after["real"][:, person], before["real"][:, person])
    assert not torch.allclose(after["real"][:, background], before["real"][:, background])
    with pytest.raises(InputError, match="backdrop_colour"):
        FolderDataset(SCENES, SCENE_NAMES, size=64, backdrop_colour=1.5)


def test_global_recolour_changes_the_whole_photo_alike_and_stays_in_range():
    real = torch.rand(1, 3, 20, 30) * 0.8 + 0.1
    out = global_recolour(real, 1.0, np.random.default_rng(5))
    assert out.shape == real.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, real)
    # one gamma and one gain per channel for every pixel: log(out) is affine in log(real)
    for c in range(3):
        kept = out[0, c].flatten() < 0.999  # pixels the clamp at 1 did not cut
        x, y = real[0, c].log().flatten()[kept], out[0, c].log().flatten()[kept]
        assert kept.sum() > 100
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        torch.testing.assert_close(y, y.mean() + slope * (x - x.mean()), atol=1e-4, rtol=0)
    # strength 0 is the identity; the same generator state gives the same change
    torch.testing.assert_close(global_recolour(real, 0.0, np.random.default_rng(1)), real)
    torch.testing.assert_close(global_recolour(real, 0.7, np.random.default_rng(9)),
                               global_recolour(real, 0.7, np.random.default_rng(9)))


@pytest.mark.parametrize("full", [255, 1.0], ids=["uint8", "float"])
def test_random_square_crop_keeps_enough_of_the_foreground(full):
    # float masks in [0, 1] are what FolderDataset hands the crop
    image = np.zeros((120, 200, 3), np.uint8)
    mask = np.zeros((120, 200), np.uint8 if full == 255 else np.float32)
    mask[40:100, 150:190] = full
    rng = np.random.default_rng(0)
    for _ in range(50):
        crop_image, crop_mask = random_square_crop(image, mask, 0.3, rng)
        side = crop_mask.shape[0]
        assert crop_mask.shape == (side, side) == crop_image.shape[:2]
        assert side <= 120 and side * side >= 0.3 * 120 * 120 - 2 * 120
        assert (crop_mask > full / 2).sum() >= 0.2 * (mask > full / 2).sum()


@needs_shared
def test_training_augmentations_leave_the_composite_rule_intact():
    plain = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3)
    augmented = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3, crop_scale=0.5,
                              global_colour=1.0)
    sample = augmented[1]
    assert sample["real"].shape == (3, 64, 64)
    background = sample["mask"][0] == 0
    assert torch.equal(sample["comp"][:, background], sample["real"][:, background])
    assert not torch.equal(sample["real"], plain[1]["real"])
    assert torch.equal(augmented[1]["real"], sample["real"])  # reproducible
    unchanged = FolderDataset(SCENES, SCENE_NAMES, size=64, seed=3, identity_prob=0.999)[1]
    assert torch.equal(unchanged["comp"], unchanged["real"])
    with pytest.raises(InputError, match="identity_prob"):
        FolderDataset(SCENES, SCENE_NAMES, size=64, identity_prob=1.0)
    with pytest.raises(InputError, match="crop_scale"):
        FolderDataset(SCENES, SCENE_NAMES, size=64, crop_scale=0)
    with pytest.raises(InputError, match="global_colour"):
        FolderDataset(SCENES, SCENE_NAMES, size=64, global_colour=1.5)
