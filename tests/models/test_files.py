"""atomic_write: the file appears whole under its name, or not at all."""

from __future__ import annotations

import os

import pytest

from vcam_harmonize.models.files import atomic_write


def test_file_appears_whole_with_usual_permissions(tmp_path):
    target = tmp_path / "settings.toml"
    with atomic_write(target) as tmp:
        tmp.write_text("a = 1\n")
        assert not target.exists() and tmp.parent == tmp_path
    assert target.read_text() == "a = 1\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]
