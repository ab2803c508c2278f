"""Where semgrad-guard keeps what it caches (converted models, model profiles)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SEMGRAD_GUARD_CACHE``, else ``$XDG_CACHE_HOME/semgrad-guard``, else
    ``~/.cache/semgrad-guard``."""
    env = os.environ.get("SEMGRAD_GUARD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "semgrad-guard"
