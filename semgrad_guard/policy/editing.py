"""Editing a policy file in place: its comments, key order and quoting are kept
(ruamel.yaml's round trip), and it is written atomically."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ..errors import ConfigError


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def read_policy_document(path: Path) -> Any:
    """The policy file as an editable document (comments kept); a missing file starts a
    new policy."""
    if not path.exists():
        return {"version": 1, "default": {}}
    text = path.read_text(encoding="utf-8")
    try:
        document = _yaml().load(text)
    except Exception as exc:  # ruamel raises its own YAMLError family
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if document is None:
        return {"version": 1, "default": {}}
    if not hasattr(document, "get"):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def existing_rule(document: Any, name: str) -> Any:
    """The rule called ``name`` as the policy reads it (a chain rule merged over the
    default rule), or ``None`` when there is none."""
    default = document.get("default")
    if name == (default or {}).get("name", "default"):
        return default
    for rule in document.get("chains") or []:
        if rule.get("name") == name:
            merged = {k: v for k, v in (default or {}).items() if k not in ("name", "match")}
            merged.update(rule)
            return merged
    return None


def set_threshold(document: Any, chain: str, threshold: dict[str, Any], score: str) -> Any:
    """Put ``threshold`` (and ``score``) into the named rule, adding a chain rule if needed."""
    default = document.get("default")
    if default is None:
        default = document["default"] = {}
    if chain == default.get("name", "default"):
        target = default
    else:
        chains = document.get("chains")
        if chains is None:
            chains = document["chains"] = []
        target = next((rule for rule in chains if rule.get("name") == chain), None)
        if target is None:
            target = {"name": chain}
            chains.append(target)
    inherited = default.get("score", "semgrad") if target is not default else "semgrad"
    if target.get("score", inherited) != score:
        target["score"] = score
    current = target.get("threshold")
    if hasattr(current, "items"):
        # Edit the mapping in place so that the comments around it stay where they are.
        for key in [k for k in current if k not in threshold]:
            del current[key]
        for key, value in threshold.items():
            current[key] = value
    else:
        target["threshold"] = threshold
    return document


def plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def write_policy_document(path: Path, document: Any) -> None:
    """Write the document atomically (a crash never leaves half a file)."""
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
