"""Importing Ray, with the exact install command when it is missing."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError

RAY_INSTALL = 'pip install "ray[serve,data]==2.60.0"'


def require(module: str) -> Any:
    """``ray``, ``ray.serve`` or ``ray.data``, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{module} is not installed; install it with: {RAY_INSTALL}") from exc
