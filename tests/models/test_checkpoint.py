"""Weight files: round trips, shape inference, and every kind of bad file."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vcam_harmonize.models import (
    CONFIGS,
    InputError,
    PHNet,
    PHNetConfig,
    checkpoint,
    default_weights_path,
    load_model,
    save_weights,
)
from vcam_harmonize.models.checkpoint import checkpoint_filter_fn, to_authors_state_dict


def _pair(size=32):
    image = torch.rand(1, 3, size, size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., 8:24, 10:20] = 1
    return image, mask


@pytest.mark.parametrize("name", ["lite", "paper", "iharmony4"])
def test_safetensors_round_trip_gives_identical_outputs(name, tmp_path):
    model = PHNet.from_config(name).eval()
    with torch.no_grad():
        model.decoder[-1].conv.bias.add_(0.3)
    path = save_weights(model, tmp_path / "w.safetensors", extra={"note": "test"})
    loaded = PHNet.from_checkpoint(path)
    assert loaded.config == model.config
    image, mask = _pair()
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), model(image, mask))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("widths,grids", [((8, 16, 16, 32, 32, 64), (6, 2, 1)),
                                          ((16, 64, 128, 256, 512, 1024), (4, 3, 2, 1)),
                                          ((4, 8, 8, 8, 16, 16), (2, 1))])
def test_authors_checkpoints_of_any_width_load_with_inferred_shapes(widths, grids, tmp_path):
    model = PHNet(PHNetConfig(widths=widths, grids=grids,
                              pfe_grid=grids[1] if len(grids) > 1 else grids[0])).eval()
    path = tmp_path / "best.pth"
    torch.save(to_authors_state_dict(model), path)
    loaded = PHNet.from_checkpoint(path)
    assert loaded.config.widths == widths and loaded.config.grids == grids
    image, mask = _pair()
    with torch.no_grad():
        assert torch.equal(loaded(image, mask), model(image, mask))


def test_authors_keys_map_onto_readable_names():
    renamed = checkpoint_filter_fn({
        "SE_block.fc.0.weight": 1, "skip.6.rconv.weight": 2, "normalizers.3.patched_fg_var": 3,
        "encoder.5.0.bias": 4, "decoder.2.1.running_var": 5,
        "feature_extractor.patch_harmonizer.grid_weights": 6,
    })
    assert renamed == {"se.fc.0.weight": 1, "skips.6.conv.weight": 2,
                       "skip_norms.3.patch_scale": 3, "encoder.5.conv.bias": 4,
                       "decoder.2.norm.running_var": 5, "pfe.mix": 6}


def test_released_key_names_are_the_documented_ones():
    state = to_authors_state_dict(PHNet.from_config("iharmony4"))
    keys = set(state)
    assert len(keys) == 77
    assert sum(t.numel() for t in state.values()) == 9_995_194
    for key in ("feature_extractor.patch_harmonizer.grid_weights", "encoder.0.0.weight",
                "normalizers.2.grid_weights", "decoder.0.1.running_mean", "skip.6.rconv.weight",
                "SE_block.fc.2.bias"):
        assert key in keys


def test_strict_loading_names_missing_and_misshapen_tensors(tmp_path):
    state = to_authors_state_dict(PHNet.from_config("iharmony4"))
    missing = dict(state)
    del missing["skip.3.rconv.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"missing.pth: .*missing 1 tensors.*skips.3.conv.weight"):
        load_model(tmp_path / "missing.pth")
    bad = dict(state)
    bad["skip.3.rconv.weight"] = torch.zeros(1, 2, 3, 3)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(InputError, match=r"shape.pth: tensor skips.3.conv.weight has shape"):
        load_model(tmp_path / "shape.pth")


def test_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"encoder.0.0.weight": Payload()}, handle)
    with pytest.raises(InputError, match="evil.pth: refused to load"):
        load_model(path)
    torch.save({"x": Payload()}, tmp_path / "evil2.pth")
    with pytest.raises(InputError, match="evil2.pth: refused to load"):
        load_model(tmp_path / "evil2.pth")
    assert not marker.exists()


def test_bad_files_give_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(tmp_path / "empty.pth")
    good = tmp_path / "good.pth"
    torch.save(to_authors_state_dict(PHNet.from_config("lite")), good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pth: not a readable weights file"):
        load_model(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello, I am not weights\n")
    with pytest.raises(InputError, match="text.pth: not a readable weights file"):
        load_model(tmp_path / "text.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pth")
    with pytest.raises(InputError, match="foreign.pth: not a PHNet checkpoint"):
        load_model(tmp_path / "foreign.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputError, match="list.pth: not a PHNet state_dict"):
        load_model(tmp_path / "list.pth")


def test_an_unreadable_weights_file_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: is a folder")):
        load_model(tmp_path)
    path = save_weights(PHNet.from_config("lite"), tmp_path / "w.safetensors")
    if os.name == "posix" and os.geteuid() != 0:  # root (and Windows) ignores chmod 0
        path.chmod(0)
        try:
            with pytest.raises(InputError, match="w.safetensors: cannot read"):
                load_model(path)
        finally:
            path.chmod(0o644)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(InputError, match="w.safetensors: cannot read the weights file "
                                         r"\(Permission denied\)"):
        load_model(path)


def test_bad_safetensors_files_give_one_clear_error(tmp_path):
    path = save_weights(PHNet.from_config("lite"), tmp_path / "w.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.safetensors: not a readable safetensors"):
        load_model(tmp_path / "cut.safetensors")
    save_file({"a": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not vcam-harmonize PHNet weights"):
        load_model(tmp_path / "other.safetensors")


def test_save_into_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_weights(PHNet.from_config("lite"), tmp_path / "no" / "w.safetensors")


def test_the_pfe_head_input_round_trips_and_older_files_keep_the_transferred_head(tmp_path):
    model = PHNet.from_config("iharmony4").eval()
    with torch.no_grad():
        model.pfe.head[0].bias.add_(0.5)
    path = save_weights(model, tmp_path / "new.safetensors")
    assert load_model(path).config.pfe_head_input == "composite"
    # a file written before the config recorded the head input
    old_config = {k: v for k, v in model.config.to_dict().items() if k != "pfe_head_input"}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata={"format": checkpoint.FORMAT_NAME,
                                         "config": json.dumps(old_config)})
    loaded = load_model(old)
    assert loaded.config.pfe_head_input == "transferred" and loaded.pfe.head_input == "transferred"
    image, mask = _pair()
    with torch.no_grad():
        model.pfe.head_input = "transferred"
        torch.testing.assert_close(loaded(image, mask), model(image, mask), rtol=0, atol=0)


def test_the_bundled_weights_load_as_the_lite_configuration():
    model = load_model(default_weights_path())
    assert model.config == CONFIGS["lite"]
    assert model.pfe.head_input == "transferred" and model.use_pfe


def test_checkpoint_does_not_import_the_network():
    # one-way imports: phnet -> checkpoint -> config, never back
    source = Path(checkpoint.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom)}
    assert "vcam_harmonize.models.config" in imported
    assert "vcam_harmonize.models.phnet" not in imported
