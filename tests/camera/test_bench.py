"""``python -m vcam_harmonize.bench``: the JSON line it prints, on a tiny configuration."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vcam_harmonize import bench, bench_load, bench_pipeline, bench_temporal
from vcam_harmonize.harmonizer import CPU_REFRESH_EVERY_GLOBAL, autocast_dtype, dtype_name

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
    # auto: bfloat16 where this CPU computes it, else float32
    assert result["precision"] == dtype_name(autocast_dtype(torch.device("cpu")))
    if SCENES.is_dir():
        assert isinstance(result["quality_gap_db"], float)
        clip = result["quality_clip"]
        assert clip["in_training_split"] == 0 and len(clip["photos"]) == 10
        # the camera's CPU schedule for its default transform, the colour matrix
        assert clip["smoothing"] == 0.95 and clip["refresh_every"] == CPU_REFRESH_EVERY_GLOBAL


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
    assert bench.main([*tiny, "--model", "iharmony4", "--frames", "4", "--warmup", "1",
                       "--precision", "float32"]) == 0
    result = _last_json_line(capsys)
    assert result["model"] == "iharmony4" and result["precision"] == "float32"
    assert result["weights"] == bench_pipeline.UNTRAINED
    assert result["frames"] == 4 and result["quality_gap_db"] is None
    assert bench.main([*tiny, "--model", "huge"]) == 2
    assert "--model must be one of" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--frames", "0"], "--frames must be positive, got 0"),
    (["--warmup", "-1"], "--warmup must be 0 or more, got -1"),
    (["--model", "big"], "--model must be one of ['ffhqh', 'iharmony4', 'lite', 'paper'], "
                         "got 'big'"),
    (["--load", "-1"], f"--load must be 0 to {bench_load.max_load()} (one core stays for the "
                       "pipeline), got -1"),
    (["--load", str(os.cpu_count())], f"--load must be 0 to {bench_load.max_load()} (one core "
                                      f"stays for the pipeline), got {os.cpu_count()}"),
    (["--pair", "--no-harmonize"],
     "--pair times a harmonized and a plain run; drop --no-harmonize"),
    (["--pair", "--pair-rounds", "0"], "--pair-rounds must be 1 or more, got 0"),
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
    assert row["precision"] == "fp32"  # without --precision: what names a machine


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-autocast"), (False, "fp32")])
def test_model_only_times_the_cameras_arithmetic_when_asked(native, expected, capsys,
                                                            monkeypatch):
    from vcam_harmonize import harmonizer

    monkeypatch.setattr(harmonizer, "cpu_computes_bfloat16", lambda: native)
    seen = []
    original = bench.time_forward
    monkeypatch.setattr(bench, "time_forward",
                        lambda *a: seen.append(a[-1]) or original(*a))
    args = ["--model-only", "--configs", "lite", "--sizes", "32", "--repeats", "1",
            "--device", "cpu"]
    assert bench.main([*args, "--precision", "auto"]) == 0
    assert bench.main([*args, "--precision", "float32"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["precision"] for r in rows] == [expected, "fp32"]
    assert seen == [torch.bfloat16 if native else None, None]


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
        for every in (CPU_REFRESH_EVERY_GLOBAL, 1):
            run = figures[f"refresh_every_{every}"]
            assert run["flicker_ratio"] > 0 and 0 <= run["settle_frames"] <= 6
            assert run["settle_s"] == round(run["settle_frames"] / 30, 3)
    assert (result["width"], result["height"], result["smoothing"]) == (160, 96, 0.95)
    assert isinstance(result["targets_met"], bool)
    assert "person_splits" in result["people_held_out_of"]


#: the fewest frames that still time a pipeline run
SHORT = [a for a in TINY if a not in ("--quality-frames", "10", "--reference-frames", "1",
                                      "--frames", "20")] + [
    "--frames", "8", "--warmup", "2", "--reference-frames", "0", "--quality-frames", "0"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children() -> set[int]:
    """The live child processes of this one, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
                found.add(int(entry.name))
    return found


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def test_without_pair_or_load_there_is_no_plain_run_and_no_load(capsys):
    assert bench.main(SHORT) == 0
    result = _last_json_line(capsys)
    assert "plain" not in result and "pair_rounds" not in result
    assert result["harmonize_overhead"] is None and result["load"] is None
    assert result["harmonize"] is True and result["frames"] == 8


def test_pair_reports_the_plain_run_and_the_harmonize_overhead(capsys):
    """--pair times the clip harmonized and plain: the top level stays the harmonized
    run's, ``plain`` is the plain run's, and the overhead is their CPU ratio."""
    assert bench.main([*SHORT, "--pair"]) == 0
    result = _last_json_line(capsys)
    plain = result["plain"]
    assert result["harmonize"] is True and plain["harmonize"] is False
    assert result["frames"] == 8 and plain["frames"] == 8
    assert plain["cpu_ms_per_frame"] > 0 and plain["fps"] > 0 and not plain["errors"]
    assert plain["stage_ms"].get("harmonize", 0.0) == 0.0
    overhead = result["harmonize_overhead"]
    assert overhead > 0
    assert overhead == pytest.approx(result["cpu_ms_per_frame"] / plain["cpu_ms_per_frame"],
                                     abs=5e-4)
    assert result["pair_rounds"] == [{"harmonized_cpu_ms_per_frame": result["cpu_ms_per_frame"],
                                      "plain_cpu_ms_per_frame": plain["cpu_ms_per_frame"],
                                      "overhead": overhead}]
    assert result["load"] is None and all(key in result for key in KEYS)


def test_pair_rounds_show_each_sides_median_run():
    """With several rounds each side shows its median run (the lower middle one for an
    even count), so the printed overhead is the ratio of the printed figures."""
    def run(cpu: float, tag: str) -> dict:
        return {"cpu_ms_per_frame": cpu, "tag": tag}

    harmonized = [run(30.0, "h0"), run(20.0, "h1"), run(25.0, "h2")]
    plain = [run(10.0, "p0"), run(12.0, "p1"), run(11.0, "p2")]
    shown_h, shown_p, overhead, rounds = bench_pipeline.pair_summary(harmonized, plain)
    assert (shown_h["tag"], shown_p["tag"], overhead) == ("h2", "p2", round(25 / 11, 3))
    assert [r["overhead"] for r in rounds] == [3.0, round(20 / 12, 3), round(25 / 11, 3)]
    shown_h, shown_p, overhead, rounds = bench_pipeline.pair_summary(harmonized[:2], plain[:2])
    assert (shown_h["tag"], shown_p["tag"], overhead) == ("h1", "p0", 2.0)
    assert len(rounds) == 2
    _, _, overhead, _ = bench_pipeline.pair_summary([run(5.0, "h")], [run(0.0, "p")])
    assert overhead is None


@linux_only
@pytest.mark.skipif(bench_load.max_load() < 1, reason="needs two cores")
def test_load_runs_beside_the_timing_and_is_gone_afterwards(capsys):
    before = _children()
    assert bench.main([*SHORT, "--load", "1"]) == 0
    result = _last_json_line(capsys)
    load = result["load"]
    assert load["processes"] == 1 and load["busy_cpu_s"] > 0 and load["wall_s"] > 0
    assert load["busy_cpu_s"] <= load["wall_s"] + 0.2  # one process: at most one core
    assert 0 < load["start_s"] < 2
    if hasattr(os, "sched_setaffinity"):
        assert load["pinned"] is True
        assert load["cores"] == [bench_load.usable_cores()[-1]]
    assert result["frames"] == 8
    assert multiprocessing.active_children() == []
    assert _children() - before == set()


@linux_only
@pytest.mark.skipif(bench_load.max_load() < 1, reason="needs two cores")
def test_the_load_stops_when_the_body_raises():
    with pytest.raises(KeyboardInterrupt), bench_load.busy_load(1) as info:
        pids = list(info.pids)
        assert len(pids) == 1 and _alive(pids[0])
        time.sleep(0.3)
        raise KeyboardInterrupt
    assert not any(_alive(pid) for pid in pids)
    assert multiprocessing.active_children() == []
    assert info.busy_cpu_s > 0 and info.wall_s >= 0.3


def test_no_load_starts_nothing():
    with bench_load.busy_load(0) as info:
        assert info.pids == [] and multiprocessing.active_children() == []
    assert info.as_json()["processes"] == 0 and info.busy_cpu_s == 0.0
    with pytest.raises(ValueError, match="load must be 0 to"):
        with bench_load.busy_load(bench_load.max_load() + 1):
            pass


_HOLDER = """
import os, sys, time
from vcam_harmonize import bench_load
bench_load.USE_PDEATHSIG = {pdeathsig}
with bench_load.busy_load(1) as info:
    print(info.pids[0], flush=True)
    if {exit_at_once}:
        os._exit(0)
    time.sleep(60)
"""


@linux_only
@pytest.mark.skipif(bench_load.max_load() < 1, reason="needs two cores")
@pytest.mark.parametrize(("death", "pdeathsig"), [("sigkill", True), ("sigkill", False),
                                                  ("os._exit", False)])
def test_the_load_exits_by_itself_when_the_benchmark_dies_hard(death, pdeathsig):
    """No finally runs when the benchmark is SIGKILLed or leaves by ``os._exit``: the load
    process sees it (the kernel's parent-death signal, else its own getppid() check)."""
    script = _HOLDER.format(pdeathsig=pdeathsig, exit_at_once=death == "os._exit")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        pid = int(holder.stdout.readline())
        if death == "sigkill":
            assert _alive(pid)
            holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert _wait_gone(pid), f"load process {pid} outlived its parent"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
