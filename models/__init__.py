"""PHNet: patch-based normalization for portrait harmonization.

``PHNet.from_config(name)`` builds a named configuration; ``PHNet.from_checkpoint(path)``
loads the authors' released files or our own safetensors weights.

Beside the network (``functional``, ``blocks``, ``phnet``, ``config``, ``checkpoint``,
``streaming``, ``weights``) live the light modules every layer shares: ``errors``
(``InputError`` and its kinds: camera, virtual camera, background, GPU), ``settings``
(the one settings schema, with the rules on the fields, that the camera's settings and
the training config are both read with), ``files`` and ``images``. This package imports
neither the camera, the tray app nor the training code.

The names below are imported on first use, so that importing a light module of this
package (``vcam_harmonize.models.errors``, which every front end needs to report bad
input) does not load PyTorch: a bad command line is answered before that happens.
"""

from __future__ import annotations

import importlib

#: public name -> the module that defines it
_EXPORTS = {
    "CONFIGS": "config", "PHNetConfig": "config", "InputError": "errors",
    "PHNet": "phnet", "load_model": "phnet", "save_weights": "checkpoint",
    "EMAStatistics": "streaming", "default_weights_path": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
