"""Renamed public names keep their old name for one release, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now called ``new`` and goes in the next release."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_module_attributes(module: str, renamed: Mapping[str, tuple[str, Any]]
                              ) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each old name in ``renamed`` (old name ->
    (new name, object)) with a warning.

    >>> __getattr__ = renamed_module_attributes("pkg", {"Old": ("New", int)})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     __getattr__("Old") is int, caught[0].category.__name__
    (True, 'DeprecationWarning')
    """

    def __getattr__(name: str) -> Any:
        if name in renamed:
            new, value = renamed[name]
            warn_renamed(f"{module}.{name}", f"{module}.{new}")
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
