"""The one settings schema: rules on fields, one converter for the camera's settings and
the training config, messages made from the rules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from vcam_harmonize.config import CameraConfig
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.settings import Rule, check, from_table, parse_interval, setting
from vcam_harmonize.training.config import TrainConfig, load_config


@dataclass
class Inner:
    rate: float = setting(0.5, within="[0, 1)")
    name: str = setting("a", choices=("a", "b"))


@dataclass
class Outer:
    size: int = setting(8, multiple_of=8)
    every: int = setting(0, within="[0, inf)", zero="auto")
    count: int = setting(1, within="(0, inf)")
    repeat: int = setting(1, within="[1, inf)")
    fps: float = setting(30.0, within="(0, 240]")
    betas: list[float] = setting(factory=lambda: [0.1, 0.2], length=2, within="[0, 1)")
    root: str = setting("x", nonempty=True)
    device: str = setting("0", number_as_text=True)
    plain: str = ""
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = setting(factory=lambda: [Inner()], nonempty=True)


@pytest.mark.parametrize(("values", "message"), [
    ({"size": 12}, "test: size must be a positive multiple of 8"),
    ({"size": 0}, "size must be a positive multiple of 8"),
    ({"every": -1}, "test: every must be 0 (auto) or more"),
    ({"count": 0}, "count must be positive"),
    ({"repeat": 0}, "repeat must be 1 or more"),
    ({"fps": 0.0}, "fps must be in (0, 240]"),
    ({"fps": 240.5}, "fps must be in (0, 240]"),
    ({"betas": [0.1]}, "betas needs two numbers in [0, 1)"),
    ({"betas": [0.1, 1.0]}, "betas needs two numbers in [0, 1)"),
    ({"root": ""}, "test: root is empty"),
    ({"inner": Inner(rate=1.0)}, "inner.rate must be in [0, 1)"),
    ({"items": [Inner(), Inner(name="c")]}, "items[1].name must be one of a, b"),
    ({"items": []}, "test: at least one [[items]] entry is needed"),
])
def test_each_rule_names_the_key_and_its_bound(values, message):
    with pytest.raises(InputError) as err:
        check(Outer(**values), "test")
    assert message in str(err.value) and str(err.value).startswith("test: ")


def test_values_on_the_bounds_pass():
    values = dict(size=16, every=0, count=1, repeat=1, fps=240.0, betas=[0.0, 0.999])
    assert check(Outer(**values)) == Outer(**values)


@pytest.mark.parametrize(("data", "message"), [
    ({"colour": 1}, "src: unknown key 'colour' (known: betas, count, device, every,"),
    ({"inner": {"bogus": 1}}, "src: unknown key 'inner.bogus' (known: name, rate)"),
    ({"items": [{}, {"x": 1}]}, "unknown key 'items[1].x'"),
    ({"count": 1.5}, "src: count must be int, got 1.5"),
    ({"count": True}, "count must be int, got True"),
    ({"fps": "fast"}, "fps must be float, got 'fast'"),
    ({"betas": 0.9}, "betas must be a list, got 0.9"),
    ({"betas": [0.1, "x"]}, "betas[1] must be float, got 'x'"),
    ({"inner": 3}, "src: inner must be a table, got 3"),
    ({"plain": 5}, "plain must be str, got 5"),
])
def test_the_converter_refuses_unknown_keys_and_wrong_types(data, message):
    with pytest.raises(InputError) as err:
        from_table(Outer, data, "src")
    assert message in str(err.value)


def test_the_converter_builds_nested_tables_and_widens_what_toml_gives():
    built = from_table(Outer, {"fps": 25, "device": 2, "inner": {"rate": 0},
                               "items": [{"name": "b"}]})
    assert built == Outer(fps=25.0, device="2", inner=Inner(rate=0.0), items=[Inner(name="b")])
    assert isinstance(built.fps, float) and isinstance(built.inner.rate, float)
    with pytest.raises(InputError, match="top level must be a table"):
        from_table(Outer, [1, 2])


def test_intervals_are_read_as_written():
    assert parse_interval("[0, 1)") == (0.0, 1.0, False, True)
    assert parse_interval("(0, inf)").holds(1e9) and not parse_interval("(0, inf)").holds(0)
    assert not parse_interval("[0, 1]").holds(True)  # a bool is no number here
    with pytest.raises(ValueError):
        setting(1.0, within="0 to 1")


def _rules(cls: type) -> dict[str, Rule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


def test_the_camera_and_the_training_config_carry_their_bounds_on_their_fields():
    camera = _rules(CameraConfig)
    assert camera["strength"].within == "[0, 1]" and camera["res"].multiple_of == 8
    assert camera["gpu"].choices == ("auto", "on", "off")
    train = _rules(type(TrainConfig().train))
    assert train["betas"].within == "[0, 1)" and train["betas"].length == 2


def test_both_configs_report_the_same_mistake_the_same_way(tmp_path):
    from vcam_harmonize.config import load_toml

    camera_file = tmp_path / "camera.toml"
    camera_file.write_text("res = 250\n")
    with pytest.raises(InputError) as camera:
        load_toml(camera_file)
    with pytest.raises(InputError) as training:
        load_config("lite", ["data.size=250"])
    assert str(camera.value) == f"{camera_file}: res must be a positive multiple of 8"
    assert str(training.value) == "config: data.size must be a positive multiple of 8"
    with pytest.raises(InputError, match="unknown key 'colour'"):
        CameraConfig.from_dict({"colour": "red"})
    with pytest.raises(InputError, match="unknown key 'train.colour'"):
        load_config("lite", ['train.colour="red"'])
