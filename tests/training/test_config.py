"""The shipped training configs load and follow the paper; bad configs are named."""

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


def test_the_paper_setups_and_lite_are_shipped():
    assert set(SHIPPED) == {*PAPER, "lite"}


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


def test_lite_is_the_recipe_of_the_shipped_weights():
    config = load_config("lite")
    assert config.model.name == "lite"
    assert [(ds.name, ds.split) for ds in config.data.sets] == [("scenes", "scenes"),
                                                                ("portraits", "portraits")]
    assert [s.name for s in config.stages] == ["encoder-decoder", "pfe", "all"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.batch_sise=8"], "unknown key train.batch_sise"),
    (["stages.0.lr=\"fast\""], "stages[0].lr must be float"),
    (["data.sets.0.repeat=1.5"], "data.sets[0].repeat must be int"),
    (["train.amp=1"], "train.amp must be bool"),
    (["data.size=100"], "data.size must be a positive multiple of 8"),
    (["data.sets.5.root=x"], "no such place in the config"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config("lite", overrides)
