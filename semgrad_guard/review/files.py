"""Files that hold personal data are created readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path


def create_private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as an empty file with mode 0600 unless it exists; returns it.

    Missing parent folders are created with mode 0700. SQLite gives its ``-wal`` and
    ``-shm`` files the mode of the database file, so they are private too.
    """
    file = Path(path)
    for parent in reversed(file.parents):
        if not parent.exists():
            parent.mkdir(mode=0o700, exist_ok=True)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return file
    os.fchmod(fd, 0o600)  # the umask cannot widen it, but a narrower one should not stick
    os.close(fd)
    return file
