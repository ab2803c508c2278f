"""Where semgrad-guard keeps what it caches (converted models, model profiles), and how
several processes share that cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$SEMGRAD_GUARD_CACHE``, else ``$XDG_CACHE_HOME/semgrad-guard``, else
    ``~/.cache/semgrad-guard``."""
    env = os.environ.get("SEMGRAD_GUARD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "semgrad-guard"


def cached_folder(target: Path, build: Callable[[Path], None],
                  complete: Callable[[Path], bool]) -> Path:
    """``target``, built once by ``build(folder)`` however many processes ask at once.

    The first process to take a file lock beside ``target`` builds into a temporary
    folder next to it and renames that into place; the others wait for the lock and find
    the folder complete. A complete folder is never deleted or replaced, since another
    process may be reading it. A build cut short leaves only its temporary folder, which
    the next build removes.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> def build(folder):
    ...     (folder / "done").write_text("yes")
    >>> folder = cached_folder(root / "thing", build, lambda f: (f / "done").is_file())
    >>> (folder / "done").read_text(), sorted(p.name for p in root.iterdir())
    ('yes', ['.thing.lock', 'thing'])
    """
    if complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):
        if complete(target):  # another process built it while this one waited
            return target
        for stale in target.parent.glob(f".{target.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # not complete, so nobody reads it: set it aside
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
            target.rename(aside / target.name)
            shutil.rmtree(aside, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
        try:
            build(tmp)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
