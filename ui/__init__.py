"""The PyQt6 tray app of PHNet Cam (``vcam-harmonize-tray``).

It steers the running camera through :class:`vcam_harmonize.pipeline.Pipeline`'s public
methods only (the pipeline makes its own sinks; the tray never imports the CLI):
:mod:`.controller` owns the pipeline and runs it off the GUI thread, :mod:`.tray` is the
system-tray icon and menu, :mod:`.window` the settings and preview window, :mod:`.actions`
the commands both share, :mod:`.gallery` the backgrounds on offer, :mod:`.errors` the fix
for each kind of error (chosen by the error's type), :mod:`.autostart` and :mod:`.icons`
the rest, and :mod:`.app` wires them together. Nothing imports this package.
"""
