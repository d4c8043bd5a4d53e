"""The PyQt6 tray app of PHNet Cam (``vcam-harmonize-tray``).

It steers the running camera through :class:`vcam_harmonize.pipeline.Pipeline`'s public
methods only: :mod:`.controller` owns the pipeline and runs it off the GUI thread,
:mod:`.tray` is the system-tray icon and menu, :mod:`.window` the settings and preview
window, :mod:`.app` wires them together.
"""
