"""vcam-harmonize: a virtual camera that harmonizes you with your background (PHNet).

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
