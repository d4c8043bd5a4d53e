"""vcam-harmonize: a virtual camera that harmonizes you with your background (PHNet).

The live camera, one module per stage: ``config`` (the settings), ``capture`` (webcam or
video file, the ``FrameSource`` protocol), ``segmentation`` (MediaPipe, the
``Segmenter`` protocol), ``backgrounds``, ``compositing``, ``harmonizer`` (PHNet's colour
transform), ``sinks`` (virtual camera, window or file, the ``Sink`` protocol and
``make_sinks``), ``pipeline`` (the threads that join them; it talks to the protocols
only, opens the parts in a fail-fast order and closes them once), ``cli``, ``doctor``,
``demo`` and the benchmarks. It imports :mod:`vcam_harmonize.models` and never ``ui`` or
``training``; what fails for a reason the user can fix is an ``InputError`` subclass
naming the part (``models.errors``).

Public interfaces: :class:`vcam_harmonize.Harmonizer` (the colour matching of one frame),
:mod:`vcam_harmonize.models` (PHNet), the ``vcam-harmonize`` command.
"""

__all__ = ["Harmonizer"]


def __getattr__(name: str):
    # imported on first use, so `import vcam_harmonize.models` stays free of camera code
    if name == "Harmonizer":
        from vcam_harmonize.harmonizer import Harmonizer

        return Harmonizer
    raise AttributeError(f"module 'vcam_harmonize' has no attribute {name!r}")
