"""The camera behind the tray: owns the :class:`Pipeline`, runs every call into it on one
worker thread, applies setting changes live and keeps them in the settings file.

Nothing here blocks the GUI thread: building the pipeline (model, segmenter, camera,
virtual camera), switching a background file or a camera, and stopping all happen on
the worker, one after the other in the order asked. Results come back to the GUI thread
through a queued Qt signal, and only there does the controller's state change and its
signals fire. Every failure becomes :attr:`CameraController.errorOccurred` with a fix;
the settings that were in force stay in force.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal

from vcam_harmonize import capture
from vcam_harmonize.backgrounds import BackgroundChoice
from vcam_harmonize.config import CameraConfig, InputError, load_toml, save_toml, settings_path
from vcam_harmonize.native_logs import native_stderr_silenced
from vcam_harmonize.pipeline import Pipeline

from .errors import fix_for
from .gallery import add_to_folder, background_files, user_backgrounds_dir

log = logging.getLogger(__name__)

PipelineFactory = Callable[[CameraConfig], Pipeline]

#: settings the running pipeline takes live, and the Pipeline method that does it.
LIVE_SETTERS = {
    "background": "set_background",
    "device": "set_device",
    "harmonize": "set_harmonize",
    "strength": "set_strength",
    "res": "set_res",
    "mask_smoothing": "set_mask_smoothing",
    "mirror": "set_mirror",
}
STATES = ("stopped", "starting", "running", "paused", "stopping", "error")
#: how each state reads in the tray's menu and tooltip and in the window
STATE_TEXT = {"stopped": "stopped", "starting": "starting...", "running": "running",
              "paused": "paused", "stopping": "stopping...", "error": "error"}


def default_pipeline(config: CameraConfig, demo: bool = False, quiet: bool = False) -> Pipeline:
    """The real camera: the sinks the config names (the virtual camera), MediaPipe,
    PHNet; with ``demo`` the bundled demo clip instead of a webcam; ``quiet`` keeps
    MediaPipe's native start-up lines off the terminal (the tray app's default, as the
    CLI's). A part that fails to open leaves none of the others open."""
    source = None
    if demo:
        from vcam_harmonize.demo import DemoClip

        source = DemoClip(config.output_size, config.fps)
    with native_stderr_silenced(enabled=quiet):
        return Pipeline(config, source=source)


class _Worker:
    """Runs jobs one at a time, in order, on a daemon thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="camera-control", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def close(self, timeout: float) -> bool:
        """Finish the queued jobs (up to ``timeout`` s); True if the thread ended."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


class CameraController(QObject):
    """The running camera as the tray and the window see it.

    Args:
        settings_file: the TOML settings (default: :func:`settings_path`); read now,
            written after every change.
        pipeline_factory: builds a Pipeline from a config (default: the real camera).
        user_folder: where added backgrounds are copied (default: the user data folder).
    """

    stateChanged = pyqtSignal(str)
    settingsChanged = pyqtSignal(object)  # CameraConfig
    errorOccurred = pyqtSignal(str, str)  # message, fix
    camerasFound = pyqtSignal(list)
    _posted = pyqtSignal(object)

    def __init__(self, settings_file: Path | None = None,
                 pipeline_factory: PipelineFactory | None = None,
                 user_folder: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings_file = Path(settings_file) if settings_file else settings_path()
        self.user_folder = Path(user_folder) if user_folder else user_backgrounds_dir()
        self.factory = pipeline_factory or default_pipeline
        self.load_error = ""
        self.config = self._load()
        self.state = "stopped"
        self.device_name = ""
        self.last_error = ""
        self._posted.connect(self._run_posted, Qt.ConnectionType.QueuedConnection)
        # worker-side state: touched by jobs only (the worker thread)
        self._applied = dataclasses.replace(self.config)
        self._pipeline: Pipeline | None = None
        self._frame: np.ndarray | None = None
        self._compare = False  # the preview shows composite | harmonized
        self._worker = _Worker()
        self._watch = QTimer(self)
        self._watch.timeout.connect(self._check_pipeline)
        self._watch.start(500)

    # ------------------------------------------------------------ settings file
    def _load(self) -> CameraConfig:
        if not self.settings_file.is_file():
            return CameraConfig()
        try:
            return load_toml(self.settings_file)
        except InputError as err:
            self.load_error = f"{err}; using the default settings"
            log.warning("%s", self.load_error)
            return CameraConfig()

    # ------------------------------------------------------------ camera control
    @property
    def running(self) -> bool:
        return self.state in ("starting", "running", "paused")

    def start(self) -> None:
        """Build and start the pipeline (on the worker)."""
        if self.running:
            return
        self._set_state("starting")
        self._submit(self._start_job, done=self._started, fail=self._start_failed)

    def stop(self) -> None:
        """Stop the pipeline and close the virtual camera (on the worker)."""
        if not self.running:
            return
        self._set_state("stopping")
        self._submit(self._stop_job, done=lambda _: self._set_state("stopped"))

    def toggle_running(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def set_paused(self, paused: bool) -> None:
        """Pause (the call sees the "paused" card) or resume; ignored while stopped."""
        if not self.running:
            return
        self._submit(lambda: self._pause_job(paused), done=self._paused_applied)

    def toggle_paused(self) -> None:
        self.set_paused(self.state != "paused")

    def change(self, **values) -> None:
        """Change settings: applied to the running camera live, then saved. A value the
        camera refuses (a bad background file, a camera that does not open) is reported
        through :attr:`errorOccurred` and the previous one stays."""
        setting = next(iter(values)) if len(values) == 1 else None
        self._submit(lambda: self._change_job(values), done=self._settings_applied,
                     fail=lambda err: self._change_failed(err, setting))

    def add_background(self, path: str | Path) -> None:
        """Check ``path`` is a usable background, copy it into the user folder, use it."""
        self._submit(lambda: self._add_job(Path(path)), done=self._settings_applied,
                     fail=lambda err: self._change_failed(err, "background"))

    def next_background(self) -> None:
        """The next offered background file (or the next one of a folder/"default")."""
        files = [str(p) for p in background_files(self.user_folder)]
        if self.config.background in files:
            position = files.index(self.config.background)
            self.change(background=files[(position + 1) % len(files)])
        else:
            self._submit(self._next_job)

    def set_compare(self, on: bool) -> None:
        """Show the preview as the composite beside the harmonized frame (labelled); the
        call keeps receiving the harmonized frame alone."""
        self._compare = bool(on)
        self._submit(self._compare_job)

    @property
    def comparing(self) -> bool:
        return self._compare

    def refresh_cameras(self) -> None:
        """Look for the cameras that open (on the worker); answers with camerasFound."""
        self._submit(capture.list_cameras, done=self.camerasFound.emit)

    # ------------------------------------------------------------ read-outs
    def latest_frame(self) -> np.ndarray | None:
        """The last frame sent to the virtual camera (None before the first)."""
        return self._frame

    def stats(self) -> dict | None:
        """The running pipeline's :meth:`Pipeline.stats`, or None while stopped."""
        pipeline = self._pipeline
        if pipeline is None or self.state not in ("running", "paused"):
            return None
        try:
            return pipeline.stats()
        except Exception:  # statistics are read while the threads write them
            return None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the camera and the worker (waits up to ``timeout`` s)."""
        self._worker.submit(self._stop_job)
        if not self._worker.close(timeout):
            log.warning("the camera did not stop within %.0f s", timeout)

    # ------------------------------------------------------------ worker jobs
    def _submit(self, job: Callable[[], object], done: Callable[[object], None] | None = None,
                fail: Callable[[Exception], None] | None = None) -> None:
        def run():
            try:
                result = job()
            except Exception as err:  # every failure is reported, none escapes
                if not isinstance(err, InputError):
                    log.exception("camera job failed")
                failed = err
                self._posted.emit(lambda: (fail or self._report_failure)(failed))
                return
            if done is not None:
                self._posted.emit(lambda: done(result))

        self._worker.submit(run)

    def _start_job(self) -> str:
        if self._pipeline is not None:
            return self.device_name
        pipeline = self.factory(dataclasses.replace(self._applied))
        pipeline.on_frame = self._on_frame
        pipeline.set_compare_preview(self._compare)
        try:
            pipeline.start()
        except BaseException:
            pipeline.stop()
            raise
        self._pipeline = pipeline
        return pipeline.sinks[0].device if pipeline.sinks else self._applied.output

    def _stop_job(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()
        self._frame = None

    def _compare_job(self) -> None:
        if self._pipeline is not None:
            self._pipeline.set_compare_preview(self._compare)
            self._frame = None  # no frame of the other kind in between

    def _pause_job(self, paused: bool) -> bool | None:
        if self._pipeline is None:
            return None
        self._pipeline.set_paused(paused)
        return paused

    def _next_job(self) -> None:
        if self._pipeline is not None:
            self._pipeline.next_background()

    def _change_job(self, values: dict) -> CameraConfig:
        new = CameraConfig.from_dict({**self._applied.to_dict(), **values}, "settings")
        changed = [key for key in values if getattr(new, key) != getattr(self._applied, key)]
        changed.sort(key=lambda key: key != "background")  # the one most likely to fail first
        pipeline = self._pipeline
        for key in changed:
            if pipeline is not None and key in LIVE_SETTERS:
                getattr(pipeline, LIVE_SETTERS[key])(getattr(new, key))
            elif key == "background":  # not running: still refuse a bad file now
                BackgroundChoice(new.background, new.output_size).current.close()
        self._applied = new
        save_toml(new, self.settings_file)
        return new

    def _add_job(self, path: Path) -> CameraConfig:
        # refuse a bad file before copying it
        BackgroundChoice(str(path), self._applied.output_size).current.close()
        return self._change_job({"background": str(add_to_folder(path, self.user_folder))})

    def _on_frame(self, image: np.ndarray) -> None:
        self._frame = image

    # ------------------------------------------------------------ GUI-thread side
    def _run_posted(self, callback: Callable[[], None]) -> None:
        callback()

    def _check_pipeline(self) -> None:
        """A pipeline that ended by itself (e.g. the virtual camera went away) is an
        error the user is told about."""
        pipeline = self._pipeline
        if pipeline is None or self.state not in ("running", "paused") or \
                not pipeline.finished.is_set():
            return
        self._set_state("error")
        if pipeline.failure is not None:
            self._report_failure(pipeline.failure)
        else:
            self.report_error("the camera stopped by itself")
        self._submit(self._stop_job)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)

    def report_error(self, message: str, fix: str | None = None, setting: str | None = None,
                     kind: type[BaseException] | None = None) -> None:
        """Tell the views about an error and what to do about it (by default the fix for
        an error of type ``kind``, else for one while changing ``setting``)."""
        fix = fix if fix is not None else fix_for(kind, setting)
        self.last_error = message
        log.warning("%s. %s", message, fix)
        self.errorOccurred.emit(message, fix)

    def _started(self, device: str) -> None:
        self.device_name = device
        if self.state == "starting":
            self._set_state("running")

    def _report_failure(self, err: Exception, setting: str | None = None) -> None:
        """Report ``err``: its own message when it is an InputError (meant for the user),
        else its type too; the fix is chosen by its type."""
        message = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
        self.report_error(message, setting=setting, kind=type(err))

    def _start_failed(self, err: Exception) -> None:
        self._set_state("error")
        self._report_failure(err)

    def _paused_applied(self, paused: bool | None) -> None:
        if paused is not None and self.state in ("running", "paused"):
            self._set_state("paused" if paused else "running")

    def _settings_applied(self, config: CameraConfig) -> None:
        self.config = config
        self.settingsChanged.emit(config)

    def _change_failed(self, err: Exception, setting: str | None) -> None:
        self._report_failure(err, setting)
        self.settingsChanged.emit(self.config)  # views go back to what is in force
