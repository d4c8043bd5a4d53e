"""The one exception type that carries a message meant for the user.

Every layer (models, training, the camera, the tray app) raises :class:`InputError`
for bad input it can name: a wrong path, a corrupt file, an invalid setting. Front
ends print ``str(err)`` as one line and exit with code 2; anything else is a bug.
"""


class InputError(ValueError):
    """Bad input from the user, with a one-line message that says what to do."""
