"""The people sets: person splits, webcam framing, balanced epochs, and the weights that
a no-PFE stage saves."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vcam_harmonize.models import load_model, save_weights
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.weights import default_weights_path
from vcam_harmonize.training import cli
from vcam_harmonize.training.config import load_config
from vcam_harmonize.training.datasets import (
    EpochSample,
    FolderDataset,
    build_splits,
    source_weights,
    upper_body_crop,
)
from vcam_harmonize.training.splits import (
    folder_splits,
    index_column,
    person_of,
    person_splits,
    read_index,
)
from vcam_harmonize.training.train import BEST, CHECKPOINT, Trainer

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "people").is_dir(),
                                  reason=f"no shared people at {SHARED}")


# ----------------------------------------------------------------------------- splits
@needs_shared
@pytest.mark.parametrize("name", ["lite", "lite_people"])
def test_no_person_is_on_both_sides_of_any_set(name):
    config = load_config(name, [f"data.sets.{i}.root={(SHARED / n).as_posix()!r}"
                                for i, n in enumerate(["scenes", "people", "faces",
                                                       "portraits"])])
    for ds in config.data.sets:
        train, val = folder_splits(ds.root, ds.split, config.data.seed, ds.val_count,
                                   ds.val_fraction)
        assert train and val and not set(train) & set(val), ds.name
        if ds.split == "person":
            persons = index_column(ds.root, "person")
            sides = [{persons.get(n) or n for n in part} for part in (train, val)]
        elif ds.split == "portraits":
            sides = [{person_of(n) for n in part} for part in (train, val)]
        else:
            continue
        assert not sides[0] & sides[1], ds.name
        assert len(train) + len(val) == len(read_index(ds.root)), ds.name


@needs_shared
def test_both_studio_photos_of_a_person_fall_on_the_same_side():
    train, val = person_splits(SHARED / "people", 0.1, seed=0)
    pairs = [n.removesuffix("_neutral") for n in train + val if n.endswith("_neutral")]
    assert len(pairs) == 42
    for person in pairs:
        sides = {f"{person}_neutral" in val, f"{person}_smiling" in val}
        assert len(sides) == 1, person
    assert 0.09 < len(val) / (len(train) + len(val)) < 0.11


@needs_shared
def test_every_face_is_its_own_person_in_the_faces_split():
    train, val = person_splits(SHARED / "faces", 0.085, seed=0)
    assert len(val) == round(0.085 * (len(train) + len(val)))
    assert person_splits(SHARED / "faces", 0.085, seed=0) == (train, val)  # fixed


def _folder(root: Path, names: list[str], index: str | None, size=(24, 16)) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((*size, 3), 90, np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[4:, 4:12] = 255
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
    if index is not None:
        (root / "index.tsv").write_text(index)
    return root


def test_person_split_follows_the_index_column(tmp_path):
    rows = ["name\tsource\tperson"] + [f"p{i}_{k}\tsrc\tperson{i}" for i in range(10)
                                       for k in "ab"]
    root = _folder(tmp_path / "f", [r.split("\t")[0] for r in rows[1:]], "\n".join(rows))
    train, val = person_splits(root, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert {n[:-2] for n in val}.isdisjoint(n[:-2] for n in train)


@pytest.mark.parametrize(("index", "message"), [
    ("person\tname\na\tb\n", "the first column must be 'name'"),
    ("name\tperson\na\n", "line 2 has 1 fields, the header 2"),
    ("name\tperson\na\tx\na\ty\n", "line 3 names 'a' a second time"),
])
def test_a_broken_index_is_named_with_its_line(tmp_path, index, message):
    root = _folder(tmp_path / "f", ["a"], index)
    with pytest.raises(InputError, match=message):
        person_splits(root)


def _people_config(tmp_path: Path, root: Path, split: str = "person",
                   val: str = "val_fraction = 0.25") -> Path:
    path = tmp_path / "people.toml"
    path.write_text(f"""
[data]
size = 16
workers = 0

[[data.sets]]
root = "{root.as_posix()}"
name = "people"
split = "{split}"
{val}

[loss]
variant = "blended"
weights = [0.0, 1.0, 0.0]

[train]
batch_size = 2

[[stages]]
epochs = 1
""")
    return path


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_an_index_naming_a_missing_photo_is_one_line_and_exit_code_2(tmp_path, capsys):
    names = [f"n{i}" for i in range(8)]
    root = _folder(tmp_path / "f", names, "\n".join(["name", *names, "ghost"]))
    args = ["train", "--config", str(_people_config(tmp_path, root)), "--out",
            str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "ghost.*: no such image" in _error_line(capsys)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_an_empty_split_is_one_line_and_exit_code_2(tmp_path, capsys):
    names = [f"n{i}" for i in range(4)]
    root = _folder(tmp_path / "f", names, "\n".join(["name", *names]))
    config = _people_config(tmp_path, root, val="val_fraction = 1.0")
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "the training split is empty" in _error_line(capsys)


# ----------------------------------------------------------------------------- framing
def _standing_person(height=448, width=296, top=40, left=110, body=(70, 340)):
    """A full-body photo: a head (a disc) on a body (a box), each pixel unique."""
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([yy % 256, xx % 256, (yy * width + xx) // 256 % 256], -1).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (left + body[0] // 2, top + 25), 25, 255, -1)
    mask[top + 45 : top + body[1], left : left + body[0]] = 255
    return image, mask


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3, 4, 5])
def test_upper_body_crop_is_a_window_of_the_photo_with_the_head_inside(seed):
    image, mask = _standing_person()
    rng = None if seed is None else np.random.default_rng(seed)
    crop, crop_mask = upper_body_crop(image, mask, rng)
    side = crop.shape[0]
    assert crop.shape == (side, side, 3) and crop_mask.shape == (side, side)
    # the pixels are unique: locate the window and check both arrays are exactly it
    top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
    assert np.array_equal(crop, image[top : top + side, left : left + side])
    assert np.array_equal(crop_mask, mask[top : top + side, left : left + side])
    # webcam framing: the whole head and the shoulders, not the legs
    rows, cols = np.nonzero(mask)
    head = mask[: rows.min() + 50]
    assert crop_mask[: rows.min() - top + 50].sum() == head.sum()
    assert side < 0.6 * image.shape[0]
    assert 1.05 * 70 <= side <= 1.65 * 70


def test_upper_body_crop_of_an_empty_mask_is_the_centre_square():
    image = np.arange(30 * 20 * 3, dtype=np.uint8).reshape(30, 20, 3)
    crop, crop_mask = upper_body_crop(image, np.zeros((30, 20), np.float32))
    assert np.array_equal(crop, image[5:25]) and crop_mask.shape == (20, 20)


def test_upper_body_samples_keep_the_truth_exact_and_the_background_untouched(tmp_path):
    image, mask = _standing_person()
    root = tmp_path / "p"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "masks" / "a.png"), mask)
    dataset = FolderDataset(root, size=None, seed=4, framing="upper_body")
    sample = dataset[0]
    crop, crop_mask = upper_body_crop(image, mask, np.random.default_rng([4, 0, 0]))
    real = (sample["real"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(real, crop)  # the truth is the photo's own pixels
    assert torch.equal(sample["mask"][0], torch.from_numpy(crop_mask > 127).float())
    outside = sample["mask"][0] == 0
    assert torch.equal(sample["comp"][:, outside], sample["real"][:, outside])
    assert not torch.equal(sample["comp"], sample["real"])


# ----------------------------------------------------------------------------- sampling
class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.epoch = n, None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_epoch_sample_draws_a_fresh_set_without_repeats_each_epoch():
    items = _Items(100)
    sample = EpochSample(items, 30, seed=1)
    first = [sample[i] for i in range(len(sample))]
    assert len(first) == len(set(first)) == 30
    sample.set_epoch(1)
    second = [sample[i] for i in range(len(sample))]
    assert items.epoch == 1 and set(second) != set(first)
    sample.set_epoch(0)
    assert [sample[i] for i in range(30)] == first
    assert len(EpochSample(items, 500, seed=1)) == 100


def test_source_weights_give_a_small_source_its_share():
    sources = ["big"] * 90 + ["small"] * 10
    weights = source_weights(sources, 1.0)
    share = sum(weights[90:]) / sum(weights)
    assert share == pytest.approx(0.5)
    assert source_weights(sources, 0.0) == [1.0] * 100
    draws = EpochSample(_Items(100), 20, seed=0, weights=source_weights(sources, 1.0))
    counts = [sum(draws[i] >= 90 for i in range(20))]
    for epoch in range(1, 40):
        draws.set_epoch(epoch)
        counts.append(sum(draws[i] >= 90 for i in range(20)))
    assert 7 < np.mean(counts) < 10  # equal shares, but only 10 small ones to draw from
    with pytest.raises(InputError, match="one positive number per item"):
        EpochSample(_Items(3), 2, 0, weights=[1.0, 0.0, 1.0])


@needs_shared
def test_the_shipped_recipe_balances_its_sets_per_epoch():
    config = load_config("lite_people", [f"data.sets.{i}.root={(SHARED / n).as_posix()!r}"
                                         for i, n in enumerate(["scenes", "people", "faces",
                                                                "portraits"])])
    splits = build_splits(config)
    # each set adds its draw, or all of its training photos where it has fewer
    sizes = [len(folder_splits(ds.root, ds.split, 0, ds.val_count, ds.val_fraction)[0])
             for ds in config.data.sets]
    assert [len(part) for part in splits.train.datasets] == [
        min(ds.samples, size) for ds, size in zip(config.data.sets, sizes, strict=True)]
    assert set(splits.val) == {"scenes", "people", "faces", "portraits"}
    assert len(splits.val["people"]) > 150 and len(splits.val["faces"]) > 150


# ----------------------------------------------------------------------------- no-PFE weights
def test_weights_saved_without_the_pfe_load_without_it(tmp_path):
    torch.manual_seed(0)
    model = load_model(default_weights_path()).eval()  # trained: the PFE gate matters
    model.use_pfe = False
    image, mask = torch.rand(1, 3, 64, 48), (torch.rand(1, 1, 64, 48) > 0.5).float()
    with torch.no_grad():
        expected = model(image, mask)
        model.use_pfe = True
        assert not torch.allclose(model(image, mask), expected)
        model.use_pfe = False
    loaded = load_model(save_weights(model, tmp_path / "w.safetensors")).eval()
    assert loaded.use_pfe is False
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), expected)


def test_best_weights_of_a_no_pfe_stage_reproduce_the_validated_network(tmp_path):
    names = [f"n{i}" for i in range(8)]
    root = _folder(tmp_path / "f", names, None, size=(32, 32))
    config = load_config(_people_config(tmp_path, root, "random", "val_count = 2"),
                         ["stages.0.pfe=false"])
    trainer = Trainer(config, tmp_path / "run", device="cpu", progress=False)
    trainer.fit()
    assert trainer.model.use_pfe is False
    best = load_model(tmp_path / "run" / BEST)
    assert best.use_pfe is False
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["use_pfe"] is False
    image, mask = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(best.eval()(image, mask), trainer.model.eval()(image, mask))
