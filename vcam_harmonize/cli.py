"""``vcam-harmonize``: run the live camera; ``vcam-harmonize doctor`` checks the setup."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

from vcam_harmonize.config import CameraConfig, load_toml
from vcam_harmonize.models.errors import InputError, run_front_end
from vcam_harmonize.native_logs import (
    StderrHandler,
    native_stderr_silenced,
    quiet_native_logs,
)

log = logging.getLogger("vcam_harmonize")

#: flags that map one-to-one onto CameraConfig fields.
_FIELD_FLAGS = ("device", "res", "width", "height", "fps", "background", "strength",
                "smoothing", "transform", "weights", "camera_device", "output", "gpu",
                "precision")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam-harmonize",
        description="A virtual camera that puts you on a background of your choice and makes "
                    "your colours and light match it (PHNet harmonization). "
                    "'vcam-harmonize doctor' checks the setup.")
    add = parser.add_argument
    add("--device", help="camera index (0), /dev/videoN or a video file (looped); default 0")
    add("--res", type=int, help="PHNet working resolution, a multiple of 8 (default 256)")
    add("--width", type=int, help="output width (default 1280)")
    add("--height", type=int, help="output height (default 720)")
    add("--fps", type=float, help="frame rate (default 30)")
    add("--background", help="image or video file, a folder (cycled), 'blur' or 'blur:N', "
                             "'#rrggbb', 'none' or 'default' (the bundled ones)")
    add("--no-harmonize", action="store_true", help="composite only, no colour matching")
    add("--strength", type=float, help="harmonization strength 0..1 (default 1)")
    add("--smoothing", type=float, help="temporal smoothing: the weight of the past per 1/30 s, "
                                        "time constant -1/(30 ln s) s (default 0.95: 0.65 s)")
    add("--transform", choices=["global", "local"],
        help="the colour correction: one colour matrix for the person (global, default: "
             "closest to the truth on held-out photos, and cheapest) or maps that vary "
             "across them (local)")
    add("--output", help="'virtualcam' (default), 'window', or a video file such as out.mp4")
    add("--camera-device", help="the loopback device to write, e.g. /dev/video10")
    add("--mirror", action="store_true", help="mirror the output (off by default: call apps "
                                              "mirror only your self-view)")
    add("--weights", help="PHNet weights: ours (.safetensors) or the authors' released .pth")
    add("--gpu", choices=["auto", "on", "off"], help="use a CUDA GPU (default auto)")
    add("--precision", choices=["auto", "float32"],
        help="the network's arithmetic: auto (default: float16 on a GPU, bfloat16 on a CPU "
             "that has it, else float32) or float32")
    add("--config", help="a TOML file with any of these settings; flags override it")
    add("--stats", action="store_true", help="print fps and per-stage timings every second")
    add("--list-devices", action="store_true", help="list the cameras that open, then exit")
    add("--frames", type=int, default=0, help="stop after N output frames")
    add("--demo", action="store_true",
        help="use the bundled demo clip instead of a webcam (no camera needed)")
    add("--compare", action="store_true",
        help="composite (left) and harmonized (right) side by side, labelled; frames twice "
             "as wide (for --output window or a video file)")
    add("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace) -> CameraConfig:
    """Defaults <- the --config file <- the flags given."""
    config = load_toml(args.config) if args.config else CameraConfig()
    values = config.to_dict()
    for name in _FIELD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.no_harmonize:
        values["harmonize"] = False
    if args.mirror:
        values["mirror"] = True
    if args.compare:
        values["compare"] = True
    return CameraConfig.from_dict(values, "command line")


def check_files(config: CameraConfig) -> None:
    """The background, the weights file and an output file's folder, checked before the
    network's libraries load (the pipeline checks them again, fully, when it opens
    them)."""
    from vcam_harmonize.backgrounds import BackgroundChoice
    from vcam_harmonize.sinks import VideoFileSink

    BackgroundChoice(config.background, config.output_size).close()
    if config.weights:
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: weights file not found" if not path.is_dir() else
                             f"{path}: is a folder, not a weights file")
    if config.output not in ("virtualcam", "window"):
        VideoFileSink(config.output, config.fps).close()  # checks the folder, writes nothing


def run(args: argparse.Namespace) -> int:
    """The live camera, until Ctrl-C, SIGTERM, ``--frames`` or a window's ``q``."""
    if args.frames < 0:
        raise InputError("--frames must be 0 (run until stopped) or more")
    config = config_from_args(args)
    check_files(config)  # before PyTorch loads: a wrong path is answered at once

    from vcam_harmonize.capture import Capture
    from vcam_harmonize.cpu_meter import CpuMeter
    from vcam_harmonize.pipeline import Pipeline
    source = None
    if args.demo:
        from vcam_harmonize.demo import DemoClip

        source = DemoClip(config.output_size, config.fps,
                          paced=config.output in ("virtualcam", "window"))
    frames = args.frames or (int(6 * config.fps) if args.demo and
                             config.output not in ("virtualcam", "window") else 0)
    # Fail fast: the settings and the files (above); then the pipeline opens the
    # background, the weights, the camera, the segmenter and the sinks, in that order
    # (what MediaPipe and TensorFlow Lite print natively meanwhile stays off the terminal)
    with native_stderr_silenced(enabled=not args.verbose):
        pipeline = Pipeline(config, source=source, max_frames=frames,
                            lossless=source is not None and not source.paced)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if isinstance(pipeline.source, Capture):
            print(f"vcam-harmonize: input {config.device} gives {pipeline.source.negotiated}",
                  file=sys.stderr)
        devices = ", ".join(sink.device for sink in pipeline.sinks)
        print(f"vcam-harmonize: {config.width}x{config.height} @ {config.fps:g} fps -> "
              f"{devices} (Ctrl-C stops)", file=sys.stderr)
        run_cpu = CpuMeter(window=math.inf)  # the average over the whole run
        pipeline.start()
        last_print = time.monotonic()
        while not stop.is_set() and not pipeline.wait(0.02):
            for sink in pipeline.sinks:
                sink.pump()
            if any(sink.quit_requested for sink in pipeline.sinks):
                break
            if args.stats and time.monotonic() - last_print >= 1.0:
                last_print = time.monotonic()
                stats = _rounded(pipeline.stats())
                if isinstance(pipeline.source, Capture) and pipeline.source.negotiated:
                    stats["input"] = pipeline.source.negotiated._asdict()
                print(json.dumps(stats), file=sys.stderr)
        cores = run_cpu.cores()
    finally:
        pipeline.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    stats = pipeline.stats()
    if pipeline.failure:
        print(f"error: {pipeline.failure}", file=sys.stderr)
        return 1
    if stats["errors"]:
        print(f"stage errors: {stats['errors']}", file=sys.stderr)
    price = "" if cores is None else \
        f" (CPU {cores:.2f} cores, {run_cpu.share(cores):.0%} of {run_cpu.machine})"
    print(f"vcam-harmonize: {stats['frames']} frames written{price}", file=sys.stderr)
    return 0


#: decimals of the --stats figures that need more than two (a share of the machine: 0.1 %).
_DECIMALS = {"cpu_share": 3}


def _rounded(stats: dict) -> dict:
    out = {}
    for key, value in stats.items():
        if isinstance(value, float):
            out[key] = round(value, _DECIMALS.get(key, 2))
        elif isinstance(value, dict):
            out[key] = _rounded(value)
        else:
            out[key] = value
    return out


def list_devices(config: CameraConfig) -> int:
    """``--list-devices``: the cameras that open (virtual cameras left out), each with the
    format it agrees to for the configured size and rate."""
    from vcam_harmonize.capture import PREFERRED_FOURCC, probe_cameras

    cameras = probe_cameras(width=config.width, height=config.height, fps=config.fps)
    if not cameras:
        print("cameras that open: none")
        return 0
    print(f"cameras that open (asked for {PREFERRED_FOURCC} {config.width}x{config.height} "
          f"@ {config.fps:g} fps):")
    for index, agreed in cameras:
        print(f"  {index}: {agreed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-v" not in argv and "--verbose" not in argv:
        quiet_native_logs()
    if argv[:1] == ["doctor"]:
        from vcam_harmonize.doctor import doctor

        # doctor writes to stdout; what its checks start natively stays off the terminal
        with native_stderr_silenced(enabled="-v" not in argv and "--verbose" not in argv):
            return doctor(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s",
                        handlers=[StderrHandler()])
    return run_front_end(
        lambda: list_devices(config_from_args(args)) if args.list_devices else run(args),
        "vcam-harmonize: interrupted")


def entry() -> None:
    """The console script. When :func:`main` returns, every part is closed and every
    thread joined; the interpreter's last garbage collections would then still walk all
    of PyTorch's long-lived objects (half a second on a small machine), so they are
    frozen first and the process ends within about 0.2 s."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
