"""tools/eval_camera.py: `evaluate` with each weights file also scored as the camera shows
it, on the tiny iHarmony4 of the evaluate tests; the numbers are checked against the
camera's own Harmonizer, image by image."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_evaluate import SIZE, _decoded, _means, iharmony  # noqa: F401
from vcam_harmonize.harmonizer import Harmonizer
from vcam_harmonize.models import PHNet, PHNetConfig
from vcam_harmonize.models.checkpoint import to_authors_state_dict

TOOL = Path(__file__).resolve().parents[2] / "tools" / "eval_camera.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("eval_camera", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_weights_file_is_scored_as_the_camera_shows_it(tool, iharmony, tmp_path):  # noqa: F811
    torch.manual_seed(1)
    model = PHNet(PHNetConfig(widths=(8, 8, 16, 16, 32, 32), grids=(4, 2, 1), pfe_grid=2)).eval()
    weights = tmp_path / "tiny.pth"
    torch.save(to_authors_state_dict(model), weights)
    out = tmp_path / "eval"
    assert tool.main(["--iharmony4", str(iharmony), "--weights", str(weights),
                      "--weights", "composite", "--camera-res", "16", "--size", str(SIZE),
                      "--camera-transform", "both", "--samples", "0", "--out", str(out)]) == 0
    samples = _decoded(iharmony)
    with open(out / "metrics.csv", newline="") as handle:
        every_row = list(csv.DictReader(handle))
    assert {r["predictor"] for r in every_row} == {"tiny", "tiny+camera-local",
                                                   "tiny+camera-global", "composite"}
    for label, transform in (("tiny+camera-local", "local"), ("tiny+camera-global", "global")):
        camera = Harmonizer(weights, "cpu", 16, transform=transform)

        def shown(s, camera=camera):
            return camera.harmonize(s["comp"].astype(np.uint8), s["mask"].astype(np.float32))

        expected = _means(samples, lambda s, shown=shown: shown(s).astype(np.float64))
        rows = [r for r in every_row if r["predictor"] == label]
        assert {(r["table"], r["dataset"], r["group"]) for r in rows} == set(expected)
        for row in rows:
            means = expected[(row["table"], row["dataset"], row["group"])]
            for metric in ("mse", "fmse", "psnr", "fpsnr"):
                assert float(row[metric]) == pytest.approx(means[metric], rel=1e-4, abs=1e-3)
        # the camera's transform leaves the background alone and changes the person
        first = samples[0]
        assert np.array_equal(shown(first)[~first["mask"]], first["comp"][~first["mask"]])
        assert not np.array_equal(shown(first)[first["mask"]], first["comp"][first["mask"]])
        assert f"| HFlickr | {label} |" in (out / "metrics.md").read_text()


def test_the_camera_precision_reaches_the_camera_and_is_logged(tool, monkeypatch, caplog):
    from vcam_harmonize import harmonizer

    monkeypatch.setattr(harmonizer, "cpu_computes_bfloat16", lambda: True)
    with caplog.at_level("INFO", logger="eval_camera"):
        tool.camera_predictor(None, torch.device("cpu"), 64, "global", "float32")
        tool.camera_predictor(None, torch.device("cpu"), 64, "local")
    assert "the camera's global network runs in float32" in caplog.text
    assert "the camera's local network runs in bfloat16" in caplog.text
    parsed = tool.build_parser().parse_args(["--weights", "composite", "--out", "x",
                                             "--camera-precision", "float32"])
    assert parsed.camera_precision == "float32"


def test_a_bad_working_resolution_is_one_error_line_and_nothing_written(tool, iharmony,  # noqa: F811
                                                                       tmp_path, capsys):
    code = tool.main(["--iharmony4", str(iharmony), "--weights", "composite",
                      "--camera-res", "12", "--out", str(tmp_path / "bad")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --camera-res must be a positive multiple of 8 (such as 256), got 12"]
    assert not (tmp_path / "bad").exists()
