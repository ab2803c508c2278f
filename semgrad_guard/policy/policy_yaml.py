"""Reading a policy file's YAML safely: bounded in size, depth and alias expansion.

A policy file is read with PyYAML's safe loader (plain data, no Python objects), and
more: at most ``MAX_BYTES`` of UTF-8, mappings and lists nested at most ``MAX_DEPTH``
deep, at most ``MAX_ALIASES`` alias uses and ``MAX_NODES`` values once aliases are
expanded (a 565-byte "billion laughs" file expands to 387 million), and no key twice
in one mapping. Anything else is a ``ConfigError`` naming the file and the place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_ALIASES = 100
MAX_NODES = 100_000


class _Refused(Exception):
    """Raised inside the loader; becomes a ConfigError with the file's name."""


class _PolicyLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *defaults" merges; keys of the mapping override it
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor reports it
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _Refused(f"line {line}: duplicate key {_short(key)} (first on line "
                                   f"{first}); a second one would silently replace the first")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values the node stands for once every alias is expanded (memoised,
    so this is linear in the document, not in its expansion)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a cycle (an alias inside its own anchor) counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    total = min(total, MAX_NODES + 1)
    sizes[id(node)] = total
    return total


def read_policy_yaml(path: Path) -> Any:
    """The data of a policy file, or ``ConfigError`` for any file that is not a small,
    well-formed YAML document."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES:,} bytes; a policy file is small")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at line "
                          f"{line}); save the file as UTF-8") from None
    loader: _PolicyLoader | None = None
    try:
        loader = _PolicyLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise _Refused(f"its aliases expand to more than {MAX_NODES:,} values "
                           "(an alias bomb?)")
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_bounded(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _bounded(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."
