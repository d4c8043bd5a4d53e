"""Training PHNet as the paper does (``vcam-harmonize-train``).

``make_ffhqh`` builds FFHQH from portraits, ``recipe`` makes composites from real photos,
``splits`` fixes the held-out parts, ``datasets`` reads iHarmony4, FFHQH and photo
folders, ``losses`` and ``metrics`` are the paper's, ``config`` is the TOML schema (read
with :mod:`vcam_harmonize.models.settings`, as the camera's settings are), ``train`` runs
the staged schedule (resumable, multi-GPU under torchrun), ``evaluate`` writes the
paper's tables, and ``cli`` is the command. It imports :mod:`vcam_harmonize.models` only,
never the camera or the tray app.
"""
