"""Writing files so that a kill never leaves a half-written one under the final name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the
    file takes ``path``'s name (one rename), otherwise it is deleted.

    The temporary name is ``<name>….tmp`` in the same folder, so leftovers of a killed
    process can be found by that pattern. The file gets the usual permissions
    (``0o666`` less the umask), not the private ones of a temporary file.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
