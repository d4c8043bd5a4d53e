"""The pipeline benchmark behind ``python -m vcam_harmonize.bench`` (see there)."""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vcam_harmonize.bench_load import busy_load, max_load
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.demo import write_demo_clip
from vcam_harmonize.harmonizer import Harmonizer
from vcam_harmonize.models import PHNet
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.pipeline import Pipeline, refresh_every
from vcam_harmonize.sinks import Sink
from vcam_harmonize.temporal import IDLE_REFRESH

#: the shared scene photos beside the repository checkout (the ``shared/`` folder next to it)
SCENES = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "scenes"
#: training holds out this many scene photos, drawn with this seed (``scene_splits``)
HELD_OUT_SCENES, SPLIT_SEED = 200, 0
#: photos of the quality clip (one second each)
QUALITY_PHOTOS = 10


def device_name(device: str) -> str:
    """A readable name of the device, e.g. "cuda (NVIDIA H100 80GB HBM3)"."""
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({os.cpu_count()} cores)"


def scenes_folder() -> Path | None:
    """The scene photos of the quality clip: beside the checkout, else ``../shared`` from
    the current folder (an installed package); None when neither is there."""
    for folder in (SCENES, Path("..") / "shared" / "datasets" / "scenes"):
        if folder.is_dir():
            return folder
    return None


class CountingSink(Sink):
    """A sink that only counts what it receives (the recording end of the benchmark)."""

    def __init__(self):
        super().__init__(mirror=False)
        self.count = 0
        self.shape: tuple | None = None

    def send(self, frame: np.ndarray) -> None:
        self.count += 1
        self.shape = frame.shape


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux /proc; else peak)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad settings before anything is loaded (InputError: one ``error:`` line)."""
    if args.frames <= 0:
        raise InputError(f"--frames must be positive, got {args.frames}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be 0 or more, got {args.warmup}")
    if not 0 <= args.load <= max_load():
        raise InputError(f"--load must be 0 to {max_load()} (one core stays for the "
                         f"pipeline), got {args.load}")
    if args.pair and args.no_harmonize:
        raise InputError("--pair times a harmonized and a plain run; drop --no-harmonize")
    if args.pair_rounds < 1:
        raise InputError(f"--pair-rounds must be 1 or more, got {args.pair_rounds}")


def run_pipeline_bench(args: argparse.Namespace) -> dict:
    check_args(args)
    device = args.devices[0]
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="vcam-bench-"))
    try:
        model, weights_label = pick_model(args, workdir)
        video = Path(args.video) if args.video else write_demo_clip(
            workdir / "demo.avi", (args.width, args.height), 30.0)
        result = {"model": model, "weights": weights_label}
        # only the pipeline runs are timed under the load (one load for all of them); the
        # figures below (harmonize_ms, reference_fps, quality) are measured without it
        with busy_load(args.load) as load:
            if args.pair:
                runs = [time_pipeline(args, device, video, harmonize=harmonize)
                        for _ in range(args.pair_rounds) for harmonize in (True, False)]
            else:
                runs = [time_pipeline(args, device, video)]
        if args.pair:
            harmonized, plain, overhead, rounds = pair_summary(runs[0::2], runs[1::2])
            result |= harmonized
            result["plain"], result["pair_rounds"] = plain, rounds
        else:
            result |= runs[0]
            overhead = None
        result["harmonize_overhead"] = overhead
        result["load"] = load.as_json() if load.processes else None
        if not args.no_harmonize:
            result["harmonize_ms"] = harmonize_cost(args, device)
        result["reference_fps"] = reference_fps(args, device) if args.reference_frames else None
        trained = weights_label != UNTRAINED
        gap, clip = (quality_gap(args, device) if args.quality_frames and trained
                     else (None, None))
        result["quality_gap_db"], result["quality_clip"] = gap, clip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


UNTRAINED = "untrained (timing only)"


def pick_model(args: argparse.Namespace, workdir: Path) -> tuple[str, str]:
    """Resolve ``--model`` and ``--weights`` into the weights the pipeline loads.

    ``--weights`` wins (its configuration is read from the file). ``--model NAME``
    without weights times an untrained network of that configuration (the speed of a
    network does not depend on its weights), written once to ``workdir``; the quality
    gap is then skipped. Returns ``(model name, weights label)`` and sets
    ``args.weights``.
    """
    from vcam_harmonize.models import CONFIGS, load_model, save_weights

    if args.weights:
        config = load_model(args.weights).config
        name = next((n for n, c in CONFIGS.items() if c == config), "custom")
        return name, str(args.weights)
    if not args.model or args.model == "lite":
        return "lite", "bundled"
    if args.model not in CONFIGS:
        raise InputError(f"--model must be one of {sorted(CONFIGS)}, got {args.model!r}")
    path = workdir / f"{args.model}-untrained.safetensors"
    save_weights(PHNet.from_config(args.model), path)
    args.weights = str(path)
    return args.model, UNTRAINED


def pair_summary(harmonized: list[dict], plain: list[dict]
                 ) -> tuple[dict, dict, float | None, list[dict]]:
    """``--pair``: the harmonized and plain runs of each round (run in the order H, P, H,
    P, ...) summed up as ``(harmonized run, plain run, harmonize_overhead, rounds)``.

    The runs shown are each side's median run by ``cpu_ms_per_frame``, the lower middle
    one for an even count (``statistics.median_low``), so every figure printed is a real
    run's and ``harmonize_overhead`` is exactly the ratio of the two printed
    ``cpu_ms_per_frame`` (3 decimals; None if the plain run used no CPU). ``rounds``
    lists each round's two ``cpu_ms_per_frame`` and their ratio."""
    def median_run(runs: list[dict]) -> dict:
        middle = statistics.median_low(run["cpu_ms_per_frame"] for run in runs)
        return next(run for run in runs if run["cpu_ms_per_frame"] == middle)

    def ratio(h: dict, p: dict) -> float | None:
        cost = p["cpu_ms_per_frame"]
        return round(h["cpu_ms_per_frame"] / cost, 3) if cost > 0 else None

    rounds = [{"harmonized_cpu_ms_per_frame": h["cpu_ms_per_frame"],
               "plain_cpu_ms_per_frame": p["cpu_ms_per_frame"], "overhead": ratio(h, p)}
              for h, p in zip(harmonized, plain, strict=True)]
    shown_h, shown_p = median_run(harmonized), median_run(plain)
    return shown_h, shown_p, ratio(shown_h, shown_p), rounds


def time_pipeline(args: argparse.Namespace, device: str, video: Path,
                  harmonize: bool | None = None) -> dict:
    """Play ``video`` through a fresh pipeline: ``args.warmup`` frames, then
    ``args.frames`` timed ones. ``harmonize`` (default: not ``--no-harmonize``) lets
    ``--pair`` time both kinds with the same settings."""
    if harmonize is None:
        harmonize = not args.no_harmonize
    config = CameraConfig(device=str(video), width=args.width, height=args.height,
                          background=args.background, harmonize=harmonize,
                          res=args.res, refresh_every=args.refresh_every,
                          smoothing=args.smoothing, weights=args.weights,
                          transform=args.transform, precision=args.precision,
                          gpu="on" if device == "cuda" else "off", output="bench")
    sink = CountingSink()
    pipeline = Pipeline(config, [sink], max_frames=args.warmup + args.frames, lossless=True,
                        paced=args.paced)
    marks: dict[str, float] = {}

    def mark() -> None:
        pipeline.reset_stats()
        marks["start"], marks["rss"] = time.perf_counter(), rss_mb()
        marks["cpu"] = time.process_time()
        marks["threads"] = threading.active_count()

    def on_frame(_image):
        if pipeline.frames_out == args.warmup:
            mark()

    pipeline.on_frame = on_frame
    if args.warmup == 0:  # on_frame first runs after frame 1: time from the start
        mark()
    pipeline.start()
    pipeline.wait()
    elapsed = time.perf_counter() - marks["start"]
    cpu = time.process_time() - marks["cpu"]
    stats = pipeline.stats()
    timed = sink.count - args.warmup
    return {
        "device": device_name(device),
        "width": args.width, "height": args.height, "res": args.res, "transform": args.transform,
        "precision": pipeline.harmonizer.network_precision,
        "harmonize": harmonize,
        "paced": args.paced,
        "refresh_every": pipeline.harmonizer.refresh_every,
        "frames": timed,
        "fps": round(timed / elapsed, 2),
        "cpu_ms_per_frame": round(1000 * cpu / max(timed, 1), 2),
        "cpu_cores": round(cpu / elapsed, 2),  # cores kept busy on average
        "p50_ms": round(stats["p50_ms"], 2),
        "p95_ms": round(stats["p95_ms"], 2),
        "stage_ms": {k: round(v, 2) for k, v in stats["stage_ms"].items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - marks["rss"], 1),
        "errors": stats["errors"],
    }


def harmonize_cost(args: argparse.Namespace, device: str, shots: int = 30,
                   passes: int = 2) -> float | None:
    """The full price of harmonization per frame, in ms, on one thread (one PyTorch
    thread too): what the camera's path, ``Harmonizer.composite_harmonized``, costs
    beyond plain :func:`composite` on the same frames, with its network runs made
    inline on every ``refresh_every``-th frame, so the network and the colour transform
    are both counted (in the pipeline the network runs on another thread and its time
    hides from the ``harmonize`` stage). The frames are demo frames with their masks
    and the bundled background, made beforehand, not timed."""
    from vcam_harmonize.compositing import composite
    from vcam_harmonize.demo import demo_frame, load_demo_photo
    from vcam_harmonize.pipeline import BackgroundChoice
    from vcam_harmonize.segmentation import PersonSegmenter

    size = (args.width, args.height)
    photo = load_demo_photo()
    background = BackgroundChoice(args.background, size).current
    if background.passthrough:  # "none": the camera's own background, nothing harmonized
        return None
    frames = []
    with PersonSegmenter() as segmenter:
        for i in range(shots):
            image = demo_frame(photo, i / 30.0, size)
            mask = segmenter.segment(image)
            frames.append((image, background.frame(image, mask), mask))
    background.close()
    harmonizer = Harmonizer(args.weights or None, device, args.res, args.smoothing,
                            refresh_every=refresh_every(device, args.refresh_every,
                                                        args.transform),
                            idle_refresh=IDLE_REFRESH, transform=args.transform,
                            precision=args.precision)

    def timed(step) -> float:
        start = time.perf_counter()
        for index in range(passes * shots):
            step(*frames[index % shots], index / 30.0)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        for index, (image, bg, mask) in enumerate(frames[:5]):  # warm-up
            harmonizer.composite_harmonized(image, bg, mask, timestamp=index / 30.0)
        harmonizer.reset()
        harmonized = timed(harmonizer.composite_harmonized)
        plain = timed(lambda image, bg, mask, _: composite(image, bg, mask))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return round(1000 * max(harmonized - plain, 0.0) / (shots * passes), 2)


def reference_fps(args: argparse.Namespace, device: str) -> float:
    """Frames per second of the authors' way: every frame resized to 512, the 39.9 M
    "ffhqh" network, resized back, blended."""
    model = PHNet.from_config("ffhqh").to(device).eval()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    mask = np.zeros((args.height, args.width), np.float32)
    cv2.ellipse(mask, (args.width // 2, args.height), (args.width // 5, args.height * 3 // 4),
                0, 0, 360, 1.0, -1)
    times = []
    with torch.inference_mode():
        for _ in range(args.reference_frames + 1):
            start = time.perf_counter()
            small = cv2.resize(frame, (512, 512), interpolation=cv2.INTER_LINEAR)
            small_mask = cv2.resize(mask, (512, 512), interpolation=cv2.INTER_NEAREST)
            image = torch.from_numpy(small).to(device).permute(2, 0, 1)[None].float() / 255
            m = torch.from_numpy(small_mask).to(device)[None, None]
            pred = model(image, m)
            blended = (pred * m + image * (1 - m))[0].permute(1, 2, 0).float().cpu().numpy()
            out = cv2.resize(blended, (args.width, args.height), interpolation=cv2.INTER_CUBIC)
            (out * 255).clip(0, 255).astype(np.uint8)
            times.append(time.perf_counter() - start)
    return round(1.0 / float(np.median(times[1:])), 4)


def held_out_scenes(root: Path, count: int = HELD_OUT_SCENES,
                    seed: int = SPLIT_SEED) -> list[str]:
    """The scene photos that training holds out, sorted: the names (``index.tsv``'s first
    column, else the ``images/`` stems) sorted, shuffled with ``random.Random(seed)``, the
    last ``count``. This is the rule of ``scene_splits`` in training, which the camera
    does not import (tests/camera checks that the two agree)."""
    index = root / "index.tsv"
    if index.is_file():
        rows = index.read_text().splitlines()[1:]
        names = sorted(row.split("\t")[0] for row in rows if row.strip())
    else:
        names = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    if len(names) <= count:
        return []
    random.Random(seed).shuffle(names)
    return sorted(names[len(names) - count:])


def quality_photos(root: Path) -> list[str]:
    """The photos of the quality clip: the first :data:`QUALITY_PHOTOS` held-out ones
    that have an image and a mask."""
    names = [n for n in held_out_scenes(root) if (root / "images" / f"{n}.jpg").is_file()
             and (root / "masks" / f"{n}.png").is_file()]
    return names[:QUALITY_PHOTOS]


def scenes_clip(frames: int, seed: int = 0):
    """``(composite, mask, truth)`` frames of a clip made from held-out scene photos
    (:func:`quality_photos`), each photo's object recoloured (channel gains and a gamma)
    and held for several frames with camera noise and a slow camera drift; None when the
    photos are not there."""
    scenes = scenes_folder()
    if scenes is None:
        return None
    names = quality_photos(scenes)
    if not names:
        return None
    rng = np.random.default_rng(seed)
    per_photo = max(1, frames // len(names))  # each photo is a one-second shot at 30 fps
    clip = []
    for name in names:
        real = cv2.cvtColor(cv2.imread(str(scenes / "images" / f"{name}.jpg")),
                            cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(scenes / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
                > 127).astype(np.float32)
        gains = rng.uniform(0.7, 1.3, 3)
        gamma = rng.uniform(0.7, 1.4)
        shifted = (255 * ((real / 255.0) ** gamma) * gains).clip(0, 255)
        comp = np.where(mask[..., None] > 0, shifted, real)
        for step in range(per_photo):
            noise = rng.normal(0, 2.0, real.shape)
            clip.append(((_drift(comp, step) + noise).clip(0, 255).astype(np.uint8),
                         _drift(mask, step, cv2.INTER_NEAREST),
                         (_drift(real.astype(np.float64), step) + noise).clip(0, 255)))
            if len(clip) == frames:
                return clip
    return clip


def _drift(image: np.ndarray, step: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` as the camera sees it ``step`` frames into a shot: it drifts 1.5 px
    right and 0.75 px down per frame, so transforms reused between network runs meet
    content that has moved."""
    shift = np.float32([[1, 0, -1.5 * step], [0, 1, -0.75 * step]])
    return cv2.warpAffine(image, shift, image.shape[1::-1], flags=interpolation,
                          borderMode=cv2.BORDER_REFLECT_101)


def _fg_psnr(out: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    fg = mask > 0.5
    mse = float(((out.astype(np.float64) - truth) ** 2)[fg].mean())
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def quality_gap(args: argparse.Namespace, device: str) -> tuple[float | None, dict | None]:
    """PSNR on the person: PHNet on every frame minus the real-time path (PHNet every
    ``refresh_every`` frames on its own thread, at the camera's pace), both with the same
    smoothing, on the scenes clip of held-out photos. Returns the gap in dB and what the
    clip was made of (its photos, the split they are held out of, how many training
    uses: 0); ``(None, None)`` without the photos."""
    clip = scenes_clip(args.quality_frames)
    if not clip:
        return None, None
    weights = args.weights or None
    live_refresh = refresh_every(device, args.refresh_every, args.transform)
    live = Harmonizer(weights, device, args.res, args.smoothing, refresh_every=live_refresh,
                      background_refresh=True, idle_refresh=IDLE_REFRESH,
                      transform=args.transform, precision=args.precision)
    exact = Harmonizer(weights, device, args.res, args.smoothing, refresh_every=1,
                       transform=args.transform, precision=args.precision)
    live_psnr, exact_psnr = [], []
    for index, (comp, mask, truth) in enumerate(clip):
        out = exact.harmonize(comp, mask, timestamp=index / 30)
        exact_psnr.append(_fg_psnr(out, truth, mask))
    due = time.perf_counter()
    for index, (comp, mask, truth) in enumerate(clip):  # at the camera's pace (30 fps)
        time.sleep(max(0.0, due - time.perf_counter()))
        due += 1 / 30
        out = live.harmonize(comp, mask, timestamp=index / 30)
        live_psnr.append(_fg_psnr(out, truth, mask))
    live.close()
    scenes = scenes_folder()
    photos = quality_photos(scenes)
    held_out = set(held_out_scenes(scenes))
    about = {"photos": photos,
             "held_out_of": f"scene_splits(scenes, {HELD_OUT_SCENES}, seed {SPLIT_SEED})",
             "in_training_split": sum(name not in held_out for name in photos),
             "smoothing": args.smoothing, "refresh_every": live_refresh}
    return round(float(np.mean(exact_psnr) - np.mean(live_psnr)), 3), about

