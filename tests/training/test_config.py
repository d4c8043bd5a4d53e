"""The shipped training configs load and follow the paper; bad configs are named."""

import re

import pytest

from vcam_harmonize.models import CONFIGS
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.training.config import CONFIG_DIR, load_config

SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
PAPER = {  # name -> (model, dataset kind, size)
    "iharmony4_256": ("iharmony4", "iharmony4", 256),
    "iharmony4_512": ("iharmony4", "iharmony4", 512),
    "ffhqh256": ("ffhqh", "ffhqh", 256),
    "ffhqh512": ("ffhqh", "ffhqh", 512),
    "ffhqh1024": ("ffhqh", "ffhqh", 1024),
}


LITE = ["lite", "lite_people", "lite_refine", "lite_backdrop", "lite_continue"]


def test_the_paper_setups_and_lite_are_shipped():
    assert set(SHIPPED) == {*PAPER, *LITE}


@pytest.mark.parametrize("name", LITE)
def test_lite_recipes_train_on_every_real_photo_set_split_by_person(name):
    config = load_config(name)
    assert config.model.name == "lite"
    sets = {ds.name: ds for ds in config.data.sets}
    assert set(sets) == {"scenes", "people", "faces", "portraits"}
    assert sets["people"].split == sets["faces"].split == "person"
    assert sets["portraits"].split == "portraits"
    assert sets["people"].framing == "upper_body" and sets["people"].source_balance > 0
    for ds in config.data.sets:
        assert ds.samples > 0 and 0 < ds.identity_prob < 1
        # the people sets see whole-photo light changes
        assert (ds.global_colour > 0) == (ds.name != "scenes")
    # no single source dominates an epoch
    assert max(ds.samples for ds in sets.values()) < 0.5 * sum(ds.samples for ds in sets.values())
    assert config.train.best_metric == "val_worst_fmse_ratio"


def test_lite_people_starts_from_the_earlier_bundled_weights():
    assert load_config("lite_people").model.init.endswith("phnet_lite.safetensors")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_by_name(name):
    config = load_config(name)
    assert config.model.name in CONFIGS
    assert config == load_config(CONFIG_DIR / f"{name}.toml")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_follow_section_5_1(name):
    config = load_config(name)
    model, kind, size = PAPER[name]
    assert (config.model.name, config.data.size) == (model, size)
    assert [ds.kind for ds in config.data.sets] == [kind]
    assert config.train.batch_size == 16
    assert (config.loss.variant, config.loss.weights) == ("paper", [0.2, 0.01, 0.01])
    stages = [(s.epochs, s.lr, s.pfe, s.freeze_encoder) for s in config.stages]
    assert stages == [(100, 1e-4, False, False), (10, 1e-5, True, True), (50, 1e-7, True, False)]


def test_dataset_roots_are_overridden_on_the_command_line():
    config = load_config("ffhqh512", ["data.sets.0.root=/data/FFHQH",
                                      "data.sets.0.real_root=/data/ffhq"])
    assert (config.data.sets[0].root, config.data.sets[0].real_root) == ("/data/FFHQH",
                                                                         "/data/ffhq")
    assert load_config("iharmony4_256").data.sets[0].root == "data/iHarmony4"


def test_lite_from_scratch_runs_the_papers_three_stages():
    config = load_config("lite")
    assert [s.name for s in config.stages] == ["encoder-decoder", "pfe", "all"]
    assert [s.pfe for s in config.stages] == [False, True, True]


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.batch_sise=8"], "unknown key 'train.batch_sise'"),
    (["stages.0.lr=\"fast\""], "stages[0].lr must be float"),
    (["data.sets.0.repeat=1.5"], "data.sets[0].repeat must be int"),
    (["train.amp=1"], "train.amp must be bool"),
    (["data.size=100"], "data.size must be a positive multiple of 8"),
    (["data.sets.5.root=x"], "no such place in the config"),
    (["train.log_every=0"], "train.log_every must be positive"),
    (["train.val_every=0"], "train.val_every must be positive"),
    (["train.betas=[0.9]"], "train.betas needs two numbers in [0, 1)"),
    (["train.betas=[0.9, 1.0]"], "train.betas needs two numbers in [0, 1)"),
    (["train.betas=[-0.1, 0.99]"], "train.betas needs two numbers in [0, 1)"),
    (["data.workers=-1"], "data.workers must be 0 or more"),
    (["data.sets.1.repeat=0"], "data.sets[1].repeat must be 1 or more"),
    (["data.sets.1.framing=\"wide\""], "data.sets[1].framing must be one of square, upper"),
    (["data.sets.1.samples=-1"], "data.sets[1].samples must be 0 (all) or more"),
    (["data.sets.1.source_balance=2"], "data.sets[1].source_balance must be in [0, 1]"),
    (["data.sets.1.split=\"people\""], "data.sets[1].split must be one of random, scenes"),
    (["train.max_minutes=-1"], "train.max_minutes must be 0 (no limit) or more"),
    (["train.best_metric=\"nope/psnr\""], "train.best_metric 'nope/psnr' is not a logged"),
    (["train.best_metric=\"scenes/ssim\""], "train.best_metric 'scenes/ssim' is not a logged"),
    (["train.best_metric=\"scenes/composite_psnr\""], "is not a logged metric"),
    (["train.best_metric=\"psnr\""], "with <set> one of scenes, people, faces, portraits"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_config("lite", overrides)


@pytest.mark.parametrize("metric", ["", "val_psnr", "scenes/fmse", "portraits/psnr",
                                    "scenes/mse", "portraits/fpsnr"])
def test_best_metric_may_name_any_per_set_metric(metric):
    assert load_config("lite", [f'train.best_metric="{metric}"']).train.best_metric == metric


def test_best_metric_names_a_set_by_its_folder_when_it_has_no_name():
    overrides = ['data.sets.0.name=""', 'train.best_metric="scenes/fpsnr"']
    assert load_config("lite", overrides).data.sets[0].root.endswith("scenes")
    with pytest.raises(InputError, match="not a logged metric"):
        load_config("lite", ['data.sets.0.name="mine"', 'train.best_metric="scenes/fpsnr"'])
