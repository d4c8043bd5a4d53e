"""PHNet: patch-based normalization for portrait harmonization.

``PHNet.from_config(name)`` builds a named configuration; ``PHNet.from_checkpoint(path)``
loads the authors' released files or our own safetensors weights.
"""

from vcam_harmonize.models.checkpoint import save_weights
from vcam_harmonize.models.config import CONFIGS, PHNetConfig
from vcam_harmonize.models.errors import InputError
from vcam_harmonize.models.phnet import PHNet, load_model
from vcam_harmonize.models.streaming import EMAStatistics
from vcam_harmonize.models.weights import default_weights_path

__all__ = ["CONFIGS", "EMAStatistics", "InputError", "PHNet", "PHNetConfig",
           "default_weights_path", "load_model", "save_weights"]
