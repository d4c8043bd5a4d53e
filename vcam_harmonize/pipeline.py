"""The live camera, top to bottom:

    capture thread  ->  segment thread  ->  harmonize thread                      (-> PHNet thread)
    (newest frame)      person mask         background, composite, colour transform,
                                            sinks

Each arrow is a one-slot hand-off that keeps only the newest item, so while frame N is
being harmonized, frame N+1 is segmented and frame N+2 captured, and latency never
builds up. The network itself runs on the Harmonizer's own thread, and frames go on
with its last colour transform meanwhile. The split between the two middle threads
keeps their work about even on two cores. Every stage is timed. A failing stage never
stops the stream: the frame goes out un-harmonized (or as the camera saw it) and the
error is logged once with a count. Settings (background, strength, harmonization,
working resolution, pause) change live. The pipeline knows its parts by their protocols
only (:class:`Sink`, :class:`Segmenter`, :class:`FrameSource`) and owns them: it opens
them, closes them if opening one fails, and closes them once when stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

import cv2
import numpy as np
import torch

from vcam_harmonize.backgrounds import BackgroundChoice
from vcam_harmonize.capture import Capture, Frame, FrameSource
from vcam_harmonize.compare import side_by_side
from vcam_harmonize.compositing import composite
from vcam_harmonize.config import CameraConfig
from vcam_harmonize.cpu_meter import CpuMeter
from vcam_harmonize.harmonizer import Harmonizer, check_res, cpu_refresh_every
from vcam_harmonize.models.errors import GpuError, InputError
from vcam_harmonize.segmentation import PersonSegmenter, Segmenter
from vcam_harmonize.sinks import Sink, make_sinks
from vcam_harmonize.temporal import IDLE_REFRESH

log = logging.getLogger(__name__)

#: seconds without a camera frame before the virtual camera shows "camera lost".
CAMERA_LOST_AFTER = 1.0
STAGES = ("capture", "segment", "background", "composite", "harmonize", "output")


class Slot:
    """A one-item hand-off between two threads.

    ``put`` replaces an unread item (live mode) or waits until it was taken
    (``lossless``, for exact frame counts).
    """

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self._item = None
        self._cond = threading.Condition()

    def put(self, item, stop: threading.Event) -> None:
        with self._cond:
            while self.lossless and self._item is not None and not stop.is_set():
                self._cond.wait(0.1)
            self._item = item
            self._cond.notify_all()

    def get(self, timeout: float):
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item


class StageErrors:
    """Logs the first error of each stage once, and counts the rest."""

    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)

    def record(self, stage: str, err: BaseException) -> None:
        self.counts[stage] += 1
        if self.counts[stage] == 1:
            log.error("%s failed (%s: %s); frames go on without it, further errors of this "
                      "stage are counted", stage, type(err).__name__, err)


def pick_device(gpu: str) -> str:
    """"cuda" or "cpu" for a ``gpu`` setting of "auto", "on" or "off"."""
    if gpu == "on" and not torch.cuda.is_available():
        raise GpuError("gpu = on, but PyTorch sees no CUDA GPU; use gpu = auto or off")
    return "cuda" if gpu != "off" and torch.cuda.is_available() else "cpu"


def refresh_every(device: str, configured: int = 0, transform: str = "global") -> int:
    """How often PHNet runs: as configured, else every frame on a GPU and on a CPU
    every :func:`cpu_refresh_every`-th for the transform (24th for the colour matrix,
    12th for the local maps)."""
    return configured or (1 if device.startswith("cuda") else cpu_refresh_every(transform))


class Pipeline:
    """The running camera.

    Making a pipeline opens its parts, in the order that answers the likeliest mistakes
    first and keeps the call's view quiet until all is well: the background, the
    harmonizer's weights, the camera (the source is started), the segmenter, and the
    sinks last. If one fails, those opened already are closed again, the ones handed in
    included (they are the pipeline's own from the start), and the error propagates.
    :meth:`start` starts the threads; :meth:`stop` closes every part once.

    Args:
        config: the settings.
        sinks: where frames go (each a :class:`Sink`); default: those ``config.output``
            names (:func:`make_sinks`); ``[]`` for none.
        segmenter: a :class:`Segmenter`; default: MediaPipe's, from the config.
        harmonizer: default: a :class:`Harmonizer` built from the config.
        source: a frame source, started here; default: :class:`Capture` of
            ``config.device``.
        max_frames: stop after this many output frames (0 = run until stopped).
        lossless: hand every captured frame through (benchmarks, exact counts).
        paced: play a video-file source at its own frame rate (False: as fast as read).
    """

    def __init__(self, config: CameraConfig, sinks: list[Sink] | None = None,
                 segmenter: Segmenter | None = None, harmonizer: Harmonizer | None = None,
                 source: FrameSource | None = None, max_frames: int = 0,
                 lossless: bool = False, paced: bool = True):
        self.size = config.output_size
        self.max_frames = max_frames
        self.lossless = lossless
        self.paced = paced
        self.harmonize_enabled = config.harmonize
        # side by side (composite | harmonized): for the sinks (config.compare) and for
        # the preview callback (the tray's switch)
        self.compare_output = config.compare
        self.compare_preview = False
        self.paused = False
        self.errors = StageErrors()
        self.frames_out = 0
        self.failure: InputError | None = None
        self.finished = threading.Event()
        self.on_frame: Callable[[np.ndarray], None] | None = None
        self._stop = threading.Event()
        self._stop_lock = threading.Lock()
        self._closed = False
        self._opencv_held = False
        self._slot = Slot(lossless)
        self._bg_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._times: dict[str, deque] = {s: deque(maxlen=1000) for s in STAGES}
        self._latency: deque = deque(maxlen=1000)
        self._out_stamps: deque = deque(maxlen=60)
        self._last_frame_at = time.monotonic()
        with contextlib.ExitStack() as undo:  # closes what is open if a step fails
            for part in (*(sinks or []), segmenter, harmonizer):
                if part is not None:
                    undo.callback(_close_quietly, part, part.close)
            if source is not None:
                undo.callback(_close_quietly, source, source.stop)
            self.config = config.validate()
            self.background = BackgroundChoice(config.background, self.size)
            undo.callback(_close_quietly, self.background, self.background.close)
            if harmonizer is None:
                device = pick_device(config.gpu)
                refresh = refresh_every(device, config.refresh_every, config.transform)
                # the network runs beside the frames, which go on with the last transform
                # (on a GPU for every frame, one frame behind, on a CPU every few, while
                # the person moves; every IDLE_REFRESH seconds while they are still)
                harmonizer = Harmonizer(config.weights or None, device, config.res,
                                        config.smoothing, config.strength, refresh,
                                        background_refresh=True, fps=config.fps,
                                        idle_refresh=IDLE_REFRESH,
                                        transform=config.transform,
                                        precision=config.precision)
                undo.callback(_close_quietly, harmonizer, harmonizer.close)
            self.harmonizer = harmonizer
            if source is None:
                source = self._capture(config.device)
                undo.callback(_close_quietly, source, source.stop)
            self.source: FrameSource = source.start()
            if segmenter is None:
                segmenter = PersonSegmenter.from_config(config)
                undo.callback(_close_quietly, segmenter, segmenter.close)
            self.segmenter: Segmenter = segmenter
            self.sinks: list[Sink] = list(sinks) if sinks is not None else make_sinks(config)
            undo.pop_all()  # all open: stop() closes the parts from now on
        self._cpu = CpuMeter()  # the price from here on (opening the parts not counted)

    # ------------------------------------------------------------------ control
    def start(self) -> Pipeline:
        """Start the segment and harmonize threads (the parts are open already)."""
        # The stages run on threads of their own, which keep the cores busy; OpenCV's
        # thread pool on top of them only adds hand-offs and spinning workers. Its size
        # is process-wide, so it is lent to the running pipelines and given back.
        _OPENCV_THREADS.hold()
        self._opencv_held = True
        self._stop.clear()
        self._last_frame_at = time.monotonic()
        self._threads = [threading.Thread(target=self._segment_loop, name="segment", daemon=True),
                         threading.Thread(target=self._harmonize_loop, name="harmonize",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the threads, then close every part once: the camera, the harmonizer's
        worker, the segmenter, the background and the sinks.

        Safe to call again and from several threads at once: a second call waits for the
        first and then returns. Threads still running after ``timeout`` s keep the parts
        they use open (closing them under a live thread could crash); a later call tries
        again.
        """
        self._stop.set()
        with self._stop_lock:
            if self._closed:
                return
            deadline = time.monotonic() + timeout
            others = [t for t in self._threads if t is not threading.current_thread()]
            for thread in others:
                thread.join(max(0.0, deadline - time.monotonic()))
            self.source.stop()
            if self._opencv_held:
                self._opencv_held = False
                _OPENCV_THREADS.give_back()
            stuck = [t.name for t in others if t.is_alive()]
            if stuck:
                log.warning("threads %s did not stop within %.0f s", stuck, timeout)
                self.finished.set()
                return
            self._closed = True
            for part in (self.harmonizer, self.segmenter, self.background, *self.sinks):
                _close_quietly(part, part.close)  # one failing must not keep others open
            self.finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pipeline finished (``max_frames`` reached or stopped)."""
        return self.finished.wait(timeout)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_paused(self, paused: bool) -> None:
        """Pause (the virtual camera shows a "paused" card) or resume."""
        self.paused = paused
        for sink in self.sinks:
            sink.paused = paused

    def set_background(self, spec: str) -> None:
        """Switch the background; a bad spec raises InputError and keeps the old one."""
        choice = BackgroundChoice(spec, self.size)
        with self._bg_lock:
            old, self.background = self.background, choice
        old.close()
        self.harmonizer.reset()

    def next_background(self) -> None:
        """The next background of a folder or of the bundled ones."""
        with self._bg_lock:
            self.background.next()
        self.harmonizer.reset()

    def set_strength(self, strength: float) -> None:
        self.harmonizer.set_strength(strength)

    def set_harmonize(self, enabled: bool) -> None:
        self.harmonize_enabled = enabled
        self.harmonizer.reset()

    def set_res(self, res: int) -> None:
        self.harmonizer.set_res(check_res(res))

    def set_compare_preview(self, on: bool) -> None:
        """Hand ``on_frame`` the composite and the harmonized frame side by side (twice as
        wide, labelled); the sinks keep getting what they got."""
        self.compare_preview = bool(on)

    def set_mirror(self, mirror: bool) -> None:
        """Mirror the output left-right (every sink)."""
        for sink in self.sinks:
            sink.mirror = mirror

    def set_mask_smoothing(self, smoothing: float) -> None:
        """Temporal smoothing of the person mask, in the range the settings allow."""
        dataclasses.replace(self.config, mask_smoothing=smoothing).validate("settings")
        self.segmenter.smoothing = smoothing

    def set_device(self, device: str) -> None:
        """Switch to another camera or video file while running; one that does not open
        raises CameraError and the current one is kept."""
        new = self._capture(device).start()
        old, self.source = self.source, new
        old.stop()
        self.harmonizer.reset()
        self.segmenter.reset()  # the old camera's mask must not linger

    def _capture(self, device: str) -> Capture:
        return Capture(_source_of(device), self.size[0], self.size[1], self.config.fps,
                       paced=self.paced, lossless=self.lossless)

    # ------------------------------------------------------------------ status
    def reset_stats(self) -> None:
        """Forget the timings so far (e.g. after a warm-up)."""
        for times in self._times.values():
            times.clear()
        self._latency.clear()
        self._out_stamps.clear()
        self._cpu.reset()

    def stats(self) -> dict:
        """Output fps, frames, per-stage milliseconds (mean of the last frames), latency
        percentiles, error counts, and the CPU price: ``cpu_cores``, the cores the whole
        process keeps busy on average over the last few seconds (CPU seconds per wall
        second, e.g. 0.43), and ``cpu_share``, that as a fraction of the machine
        (``cpu_cores / os.cpu_count()``, 0..1); both None within 0.1 s of making the
        pipeline or of :meth:`reset_stats` (too short a span to measure)."""
        stamps = list(self._out_stamps)
        fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and \
            stamps[-1] > stamps[0] else 0.0
        latency = sorted(self._latency)
        cpu_cores = self._cpu.cores()
        return {
            "fps": fps,
            "frames": self.frames_out,
            "capture_fps": self.source.fps,
            "stage_ms": {s: (1000 * sum(v) / len(v) if v else 0.0)
                         for s, v in self._times.items()},
            "p50_ms": 1000 * latency[len(latency) // 2] if latency else 0.0,
            "p95_ms": 1000 * latency[int(len(latency) * 0.95)] if latency else 0.0,
            "errors": dict(self.errors.counts) | (
                {"refresh": self.harmonizer.refresh_errors}
                if self.harmonizer.refresh_errors else {}),
            "camera": self.source.state,
            "paused": self.paused,
            "cpu_cores": cpu_cores,
            "cpu_share": self._cpu.share(cpu_cores),
        }

    # ------------------------------------------------------------------ threads
    def _timed(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self._times[stage].append(now - start)
        return now

    def _segment_loop(self) -> None:
        while not self._stop.is_set():
            if self.paused:
                self._stop.wait(0.05)
                continue
            t = time.perf_counter()
            try:
                frame: Frame | None = self.source.read(timeout=0.25)
            except Exception as err:
                self.errors.record("capture", err)
                self._stop.wait(0.1)
                frame = None
            if frame is None:
                self._camera_silent()
                continue
            self._last_frame_at = time.monotonic()
            t = self._timed("capture", t)
            image = frame.image
            try:
                mask = self.segmenter.segment(image)
            except Exception as err:
                self.errors.record("segment", err)
                mask = None
            self._timed("segment", t)
            self._slot.put((frame, mask), self._stop)

    def _stop_from_worker(self) -> None:
        """End the run from one of its own threads (which stop() would wait for)."""
        self._stop.set()
        threading.Thread(target=self.stop, name="stopper", daemon=True).start()

    def _camera_silent(self) -> None:
        if time.monotonic() - self._last_frame_at > CAMERA_LOST_AFTER:
            for sink in self.sinks:
                sink.show_card("Camera lost - reconnecting")

    def _harmonize_loop(self) -> None:
        while not self._stop.is_set():
            item = self._slot.get(timeout=0.25)
            if item is None:
                continue
            frame, mask = item
            t = time.perf_counter()
            image, composite = (frame.image, None) if mask is None else self._compose(
                frame.image, mask, t, frame.timestamp)
            self._emit(image, frame.timestamp, time.perf_counter(), composite)
            if self.max_frames and self.frames_out >= self.max_frames:
                self._stop_from_worker()
                return

    def _compose(self, image: np.ndarray, mask: np.ndarray, t: float,
                 captured_at: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The person on the chosen background, harmonized (its smoothing timed by the
        capture time ``captured_at``); the camera's own frame when the background is
        "none" or cannot be had. Second: the composite before
        harmonization, kept only while a side-by-side comparison is on (else None)."""
        try:
            # under the lock: a switch must not close a video being read
            with self._bg_lock:
                background = self.background.current
                bg = None if background.passthrough else background.frame(image, mask)
            if bg is None:
                return image, None
            t = self._timed("background", t)
        except Exception as err:
            self.errors.record("background", err)
            return image, None
        compare = self.compare_output or self.compare_preview
        harmonize = self.harmonize_enabled
        if harmonize and not compare:
            try:
                # one pass over the person's box composites and harmonizes (the
                # "composite" stage is part of "harmonize" then)
                image = self.harmonizer.composite_harmonized(image, bg, mask,
                                                             timestamp=captured_at)
                self._times["composite"].append(0.0)
                self._timed("harmonize", t)
                return image, None
            except Exception as err:
                self.errors.record("harmonize", err)
                harmonize = False  # this frame goes out composited only
        try:
            image = composite(image, bg, mask)
        except Exception as err:
            self.errors.record("background", err)
            return image, None
        t = self._timed("composite", t)
        before = image.copy() if compare else None
        if harmonize:
            try:
                # the composite is this frame's own array: harmonize it in place
                image = self.harmonizer.harmonize(image, mask, in_place=True,
                                                  timestamp=captured_at)
            except Exception as err:
                self.errors.record("harmonize", err)
            self._timed("harmonize", t)
        return image, before

    def _emit(self, image: np.ndarray, captured_at: float, t: float,
              composite: np.ndarray | None = None) -> None:
        pair = None
        if self.compare_output or self.compare_preview:
            pair = side_by_side(image if composite is None else composite, image)
        sent = pair if self.compare_output else image
        for sink in self.sinks:
            failure = sink.failure
            if failure is not None and self.failure is None:
                self.failure = failure
                log.error("%s; stopping", failure)
                self._stop_from_worker()
                return
            try:
                sink.send(sent)
            except Exception as err:
                self.errors.record(f"output {type(sink).__name__}", err)
        self._timed("output", t)
        now = time.monotonic()
        self._latency.append(now - captured_at)
        self._out_stamps.append(now)
        self.frames_out += 1
        if self.on_frame is not None:
            try:
                self.on_frame(pair if self.compare_preview else image)
            except Exception as err:
                self.errors.record("on_frame callback", err)


def _source_of(device: str) -> int | str:
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def _close_quietly(part: object, close: Callable[[], None]) -> None:
    """Call ``close`` (of ``part``); a failure is logged, so the next part still closes."""
    try:
        close()
    except Exception as err:
        log.warning("closing %s failed: %s", type(part).__name__, err)


class _OpenCVThreads:
    """OpenCV's thread count, lent to the running pipelines.

    The count is process-wide (``cv2.setNumThreads`` in one thread sets it for all), so
    the first pipeline to start sets it to 1 and the last one to stop puts back the
    caller's value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._callers = 0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._callers = cv2.getNumThreads()
                cv2.setNumThreads(1)
            self._holders += 1

    def give_back(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                cv2.setNumThreads(self._callers)


_OPENCV_THREADS = _OpenCVThreads()
