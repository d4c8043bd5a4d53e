"""``python -m vcam_harmonize.bench``: the JSON line it prints, on a tiny configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcam_harmonize import bench, bench_pipeline, bench_temporal

SCENES = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "scenes"
PEOPLE = SCENES.parent / "people"
KEYS = ["model", "weights", "cpu_ms_per_frame", "harmonize_ms", "device", "width", "height",
        "res", "frames", "fps", "p50_ms", "p95_ms", "stage_ms", "peak_rss_mb", "rss_growth_mb",
        "reference_fps", "quality_gap_db"]
TINY = ["--device", "cpu", "--width", "160", "--height", "96", "--res", "64", "--frames", "20",
        "--reference-frames", "1", "--quality-frames", "10"]


def _last_json_line(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def test_the_pipeline_benchmark_prints_every_documented_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the scene photos are found from the checkout, not the cwd
    assert bench.main([*TINY, "--warmup", "0"]) == 0
    result = _last_json_line(capsys)
    assert all(key in result for key in KEYS), sorted(set(KEYS) - set(result))
    assert result["device"].startswith("cpu")
    assert (result["width"], result["height"], result["res"]) == (160, 96, 64)
    assert result["frames"] == 20 and result["fps"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert set(result["stage_ms"]) and all(v >= 0 for v in result["stage_ms"].values())
    assert result["peak_rss_mb"] > 0 and isinstance(result["rss_growth_mb"], float)
    assert result["reference_fps"] > 0
    assert (result["model"], result["weights"]) == ("lite", "bundled")
    assert result["cpu_ms_per_frame"] > 0 and result["harmonize_ms"] > 0
    assert 0 < result["cpu_cores"] and result["paced"] is False
    if SCENES.is_dir():
        assert isinstance(result["quality_gap_db"], float)
        clip = result["quality_clip"]
        assert clip["in_training_split"] == 0 and len(clip["photos"]) == 10
        assert clip["smoothing"] == 0.95 and clip["refresh_every"] == 12


def test_paced_run_plays_the_clip_at_its_frame_rate(capsys):
    """--paced delivers the demo clip's 30 frames a second, as a camera would, so the
    measured rate is the clip's and not the pipeline's."""
    fast = [a for a in TINY if a not in ("--quality-frames", "10", "--reference-frames", "1")]
    args = [*fast, "--frames", "30", "--warmup", "3", "--reference-frames", "0",
            "--quality-frames", "0"]
    assert bench.main([*args, "--paced"]) == 0
    result = _last_json_line(capsys)
    assert result["paced"] is True and result["frames"] == 30
    assert 24 <= result["fps"] <= 33
    assert 0 < result["cpu_cores"] <= 2.5


def test_model_option_times_an_untrained_network_of_that_configuration(capsys):
    tiny = [a for a in TINY if a not in ("--quality-frames", "10")]
    assert bench.main([*tiny, "--model", "iharmony4", "--frames", "4", "--warmup", "1"]) == 0
    result = _last_json_line(capsys)
    assert result["model"] == "iharmony4"
    assert result["weights"] == bench_pipeline.UNTRAINED
    assert result["frames"] == 4 and result["quality_gap_db"] is None
    assert bench.main([*tiny, "--model", "huge"]) == 2
    assert "--model must be one of" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--frames", "0"], "--frames must be positive, got 0"),
    (["--warmup", "-1"], "--warmup must be 0 or more, got -1"),
    (["--model", "big"], "--model must be one of ['ffhqh', 'iharmony4', 'lite', 'paper'], "
                         "got 'big'"),
])
def test_bad_frame_counts_are_one_line_and_exit_code_2(args, message, capsys):
    assert bench.main(["--device", "cpu", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {message}" and not captured.out


def test_no_scene_photos_means_no_quality_clip(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(bench_pipeline, "SCENES", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert bench_pipeline.scenes_clip(10) is None


def test_model_only_prints_one_line_per_configuration(capsys):
    args = ["--model-only", "--configs", "lite", "--sizes", "64", "--repeats", "1",
            "--device", "cpu"]
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["config"] == "lite" and row["params"] == 971729
    assert row["median_ms"]["64"] > 0 and row["gmacs"]["64"] > 0


def test_the_camera_background_skips_the_harmonization_price(capsys):
    """--background none keeps the camera's own background: nothing is harmonized, so
    there is no harmonization price to print."""
    tiny = [a for a in TINY if a not in ("--quality-frames", "10")]
    args = [*tiny, "--background", "none", "--frames", "4", "--warmup", "1",
            "--reference-frames", "0", "--quality-frames", "0"]
    assert bench.main(args) == 0
    result = _last_json_line(capsys)
    assert result["frames"] == 4 and result["harmonize_ms"] is None
    assert result["stage_ms"].get("harmonize", 0.0) == 0.0


@pytest.mark.skipif(not SCENES.is_dir(), reason="needs ../shared/datasets/scenes")
def test_the_quality_clip_photos_are_held_out_of_training():
    """The quality gap is measured on photos training never saw: the bench's own reading
    of the split (the camera does not import training) is training's."""
    from vcam_harmonize.training.splits import scene_splits

    train, held_out = scene_splits(SCENES, 200, 0)
    assert bench_pipeline.held_out_scenes(SCENES) == held_out
    photos = bench_pipeline.quality_photos(SCENES)
    assert len(photos) == bench_pipeline.QUALITY_PHOTOS
    assert not set(photos) & set(train)


@pytest.mark.skipif(not PEOPLE.is_dir(), reason="needs ../shared/datasets/people")
def test_the_temporal_clips_show_people_held_out_of_training():
    from vcam_harmonize.training.splits import person_splits

    train, held_out = person_splits(PEOPLE, 0.1, 0)
    persons = {spec.person for spec in bench_temporal.CLIPS}
    assert persons == {bench_temporal.STATIC_PERSON, bench_temporal.MOVING_PERSON}
    assert persons <= set(held_out) and not persons & set(train)


@pytest.mark.skipif(not PEOPLE.is_dir(), reason="needs ../shared/datasets/people")
def test_temporal_prints_flicker_and_settle_for_both_clips_and_refresh_settings(
        monkeypatch, capsys):
    from dataclasses import replace

    short = tuple(replace(spec, frames=spec.step + 6) for spec in bench_temporal.CLIPS)
    monkeypatch.setattr(bench_temporal, "CLIPS", short)
    monkeypatch.setattr(bench_temporal, "CLIP_SIZE", (160, 96))
    assert bench.main(["--temporal", "--device", "cpu", "--res", "64"]) == 0
    result = _last_json_line(capsys)
    assert set(result["clips"]) == {"synthetic", "person"}
    for figures in result["clips"].values():
        assert figures["input_flicker"] > 0
        for every in (12, 1):
            run = figures[f"refresh_every_{every}"]
            assert run["flicker_ratio"] > 0 and 0 <= run["settle_frames"] <= 6
            assert run["settle_s"] == round(run["settle_frames"] / 30, 3)
    assert (result["width"], result["height"], result["smoothing"]) == (160, 96, 0.95)
    assert isinstance(result["targets_met"], bool)
    assert "person_splits" in result["people_held_out_of"]
