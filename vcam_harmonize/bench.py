"""``python -m vcam_harmonize.bench``: the project's benchmark.

By default it runs the real pipeline (frames from a video file, as fast as they can be
read, or at the clip's own frame rate with ``--paced``; MediaPipe segmentation;
compositing; harmonization; a recording sink) and prints one JSON line last: fps, CPU
use, capture-to-sink latency percentiles, per-stage milliseconds, memory, the speed of
the way a user of the authors' code would harmonize video (``reference_fps``) and the
quality cost of the real-time shortcuts (``quality_gap_db``).

``--pair`` times the clip twice in one go, harmonized and plain (as ``--no-harmonize``),
so the price of harmonization is read off one machine in one state: the top-level keys
stay the harmonized run's, ``plain`` holds the plain run's, and ``harmonize_overhead`` is
the ratio of their ``cpu_ms_per_frame``. ``--pair-rounds n`` alternates them n times (H,
P, H, P, ...) against drift in the machine's state; both runs shown are then each side's
median run (the lower middle one for even n), the overhead is their ratio and
``pair_rounds`` lists every round's. Without ``--pair`` there is no ``plain`` or
``pair_rounds`` and ``harmonize_overhead`` is null.

``--load N`` times under load, as in a call where the app's video encoder keeps cores
busy: N processes spin on the CPU for the whole of the timed run(s), each pinned to a
core of its own from the last one down (Linux); ``load`` reports their number, pinning,
cores, the CPU seconds they actually burnt and how long they ran, so a reader sees the
load was there (null with ``--load 0``). See :mod:`vcam_harmonize.bench_load`. The
figures outside the timed runs (``harmonize_ms``, ``reference_fps``, the quality gap)
are measured without the load.

``--model-only`` times PHNet alone: for each configuration its parameters, MACs and the
median forward time at each size, on the CPU and on CUDA when present, one JSON line
per configuration and device.

``--temporal`` measures how the harmonized person behaves in time (flicker, and how fast
a change of light is followed) on two clips of held-out people photos, with PHNet on
every ``refresh_every``-th frame and on every frame; see
:mod:`vcam_harmonize.bench_temporal`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from vcam_harmonize.bench_pipeline import device_name
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.models import CONFIGS, PHNet
from vcam_harmonize.models.phnet import count_parameters


def count_macs(model: PHNet, size: int) -> int:
    """Multiply-accumulates of one forward pass at ``size x size``."""
    from torch.utils.flop_counter import FlopCounterMode

    image, mask = _inputs(size, "cpu")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(image, mask)
    return counter.get_total_flops() // 2


def _inputs(size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 :, size // 4 : 3 * size // 4] = 1
    return image.to(device), mask.to(device)


def time_forward(model: PHNet, size: int, device: str, repeats: int,
                 dtype: torch.dtype | None) -> float:
    """Median milliseconds of one forward pass (after warm-up), under autocast to
    ``dtype`` (None: float32)."""
    image, mask = _inputs(size, device)
    times = []
    from vcam_harmonize.harmonizer import autocast_to

    with torch.inference_mode(), autocast_to(torch.device(device).type, dtype):
        for i in range(repeats + 3):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(image, mask)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 3:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


#: ``precision`` of the model-only rows, by the autocast dtype
_ROW_PRECISION = {None: "fp32", torch.float16: "fp16-autocast",
                  torch.bfloat16: "bf16-autocast"}


def model_only(configs: list[str], sizes: list[int], devices: list[str], repeats: int,
               threads: int, precision: str | None = None) -> list[dict]:
    """One JSON row a configuration and device. ``precision`` None: float16 autocast on
    CUDA and float32 on the CPU (the figures that name a machine); "auto" or "float32":
    the camera's choice for that setting (bfloat16 on a CPU that computes it)."""
    from vcam_harmonize.harmonizer import autocast_dtype

    torch.set_num_threads(threads)
    rows = []
    for name in configs:
        model = PHNet.from_config(name).eval()
        params = count_parameters(model)
        macs = {str(s): count_macs(model, s) for s in sizes}
        for device in devices:
            # without a precision: the camera's on CUDA, float32 on the CPU
            dtype = autocast_dtype(torch.device(device), precision or (
                "auto" if device.startswith("cuda") else "float32"))
            net = model.to(device).to(memory_format=torch.channels_last)
            row = {"config": name, "device": device_name(device), "params": params,
                   "gmacs": {k: round(v / 1e9, 3) for k, v in macs.items()},
                   "threads": threads if device == "cpu" else None,
                   "precision": _ROW_PRECISION[dtype],
                   "median_ms": {str(s): round(time_forward(net, s, device, repeats, dtype),
                                               2) for s in sizes}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        model.to("cpu")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vcam_harmonize.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model-only", action="store_true",
                        help="time PHNet alone (each configuration, each size)")
    parser.add_argument("--temporal", action="store_true",
                        help="flicker and settle time after a light step, on two 640x360 "
                             "clips at 30 fps (the Harmonizer alone; --smoothing, "
                             "--refresh-every, --res, --weights apply)")
    parser.add_argument("--step-frame", type=int,
                        help="--temporal: the light steps at this frame of both clips "
                             "(default: 60 and 65; where the step falls between the "
                             "network's runs moves the settle time)")
    parser.add_argument("--precision", choices=["auto", "float32"],
                        help="the network's arithmetic (default auto: bfloat16 on a CPU "
                             "that computes it, as the camera does; with --model-only "
                             "the default is float32 on the CPU, whose median names a "
                             "machine)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA too when present")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    pipe = parser.add_argument_group("pipeline benchmark")
    pipe.add_argument("--width", type=int, default=1280)
    pipe.add_argument("--height", type=int, default=720)
    pipe.add_argument("--res", type=int, default=256, help="PHNet working resolution")
    pipe.add_argument("--transform", choices=["global", "local"], default=CameraConfig.transform,
                      help="the camera's colour transform (default global)")
    pipe.add_argument("--frames", type=int, default=600, help="frames to time")
    pipe.add_argument("--warmup", type=int, default=60, help="frames before timing starts")
    pipe.add_argument("--video", help="input video (default: the demo clip, written once)")
    pipe.add_argument("--background", default="default")
    pipe.add_argument("--weights", default="", help="weights (default: bundled)")
    pipe.add_argument("--model", default="",
                      help="time an untrained network of this configuration (such as ffhqh) "
                           "instead of the bundled weights; its quality gap is skipped")
    pipe.add_argument("--refresh-every", type=int, default=0,
                      help="PHNet every n-th frame (0: the camera's default)")
    pipe.add_argument("--smoothing", type=float, default=CameraConfig.smoothing,
                      help="temporal smoothing, the weight of the past per 1/30 s (time "
                           "constant -1/(30 ln s) s: 0.9 0.32 s, 0.95 0.65 s)")
    pipe.add_argument("--no-harmonize", action="store_true")
    pipe.add_argument("--paced", action="store_true",
                      help="play the clip at its own 30 fps, as a camera delivers frames "
                           "(cpu_cores then tells the load of a live camera)")
    pipe.add_argument("--pair", action="store_true",
                      help="time a harmonized and a plain run of the same clip and report "
                           "plain and harmonize_overhead (the ratio of their "
                           "cpu_ms_per_frame); not with --no-harmonize")
    pipe.add_argument("--pair-rounds", type=int, default=1,
                      help="with --pair: alternate the two this many times (H, P, H, P, "
                           "...) and report each side's median run")
    pipe.add_argument("--load", type=int, default=0, metavar="N",
                      help="time under N busy processes (standing in for the call app's "
                           "video encoder), each pinned to its own core from the last one "
                           "down; 0 to cpu_count-1")
    pipe.add_argument("--reference-frames", type=int, default=5,
                      help="frames to time the authors' way (0: skip)")
    pipe.add_argument("--quality-frames", type=int, default=300,
                      help="frames of the scenes clip for quality_gap_db (0: skip)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step_frame is not None and not args.temporal:
        print("error: --step-frame is a setting of --temporal; add --temporal",
              file=sys.stderr)
        return 2
    if args.device == "auto" and not args.model_only:
        devices = ["cuda" if torch.cuda.is_available() else "cpu"]
    elif args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but PyTorch sees no CUDA GPU; use --device cpu",
              file=sys.stderr)
        return 2
    else:
        devices = [args.device]
    args.devices = devices
    if args.model_only:  # without --precision: float32 on the CPU, which names a machine
        model_only(args.configs, args.sizes, devices, args.repeats, args.threads,
                   args.precision)
        return 0
    args.precision = args.precision or CameraConfig.precision
    if args.temporal:
        return temporal(args, devices[0])
    from vcam_harmonize.bench_pipeline import run_pipeline_bench
    from vcam_harmonize.models.errors import InputError

    try:
        result = run_pipeline_bench(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


def temporal(args: argparse.Namespace, device: str) -> int:
    """``--temporal``: print the figures of :func:`vcam_harmonize.bench_temporal.temporal_bench`
    as one JSON line; exit code 2 without the people photos or with bad settings."""
    from vcam_harmonize.bench_temporal import HELD_OUT_PEOPLE, temporal_bench
    from vcam_harmonize.harmonizer import Harmonizer, autocast_dtype, dtype_name
    from vcam_harmonize.models.errors import InputError
    from vcam_harmonize.pipeline import refresh_every
    from vcam_harmonize.temporal import IDLE_REFRESH

    # the figures do not depend on speed: one PyTorch thread, as the camera's refresh
    # thread runs the network (two beside other work on two cores mostly wait)
    torch.set_num_threads(1)

    def make(smoothing: float, every: int) -> Harmonizer:
        # every n-th frame: the camera's schedule (fewer runs while the person is still)
        return Harmonizer(args.weights or None, device, args.res, smoothing, refresh_every=every,
                          idle_refresh=IDLE_REFRESH if every > 1 else None,
                          transform=args.transform, precision=args.precision)

    try:
        result = temporal_bench(make, args.smoothing,
                                refresh_every(device, args.refresh_every, args.transform),
                                step=args.step_frame)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is None:
        print("error: --temporal needs the people photos (../shared/datasets/people)",
              file=sys.stderr)
        return 2
    precision = dtype_name(autocast_dtype(torch.device(device), args.precision))
    result = {"device": device_name(device), "res": args.res, "transform": args.transform,
              "precision": precision, "weights": args.weights or "bundled", **result,
              "people_held_out_of": HELD_OUT_PEOPLE}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
