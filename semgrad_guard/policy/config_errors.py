"""Validation errors of a policy file as messages a person can act on: the file, the
key path as the file spells it, the bad value and what is allowed.

>>> from semgrad_guard.policy import PolicyConfig
>>> PolicyConfig.from_dict({"version": 1, "default": {"threshold": {"max_score": 0.1},
...                         "actions": ["shout"]}})
Traceback (most recent call last):
...
semgrad_guard.errors.ConfigError: invalid policy policy:
  policy: default.actions.0.type: got 'shout'; allowed: abstain, flag, retry_with_retrieval, escalate, custom
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def describe_errors(exc: ValidationError, source: str, model: type[BaseModel],
                    tags: Sequence[str]) -> str:
    """Every error of ``exc`` on one line: the file, the key path as the file spells it,
    what was wrong and what is allowed. ``model`` is the validated model (for the keys a
    mapping may hold); ``tags`` are the type names of its tagged unions (actions)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # Pydantic names the union member by its tag; the file has no such key.
        shown_loc = [p for i, p in enumerate(loc)
                     if not (p in tags and i > 0 and isinstance(loc[i - 1], int))]
        path = ".".join(str(p) for p in shown_loc) or "(top level)"
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{source}: {path}: unknown key{hint}")
        elif kind == "missing":
            lines.append(f"{source}: {path}: required key is missing")
        elif kind == "union_tag_invalid":
            lines.append(f"{source}: {path}.type: got {_shown((err.get('ctx') or {}).get('tag'))}; "
                         f"allowed: {', '.join(tags)}")
        elif kind in ("literal_error", "enum"):
            expected = (err.get("ctx") or {}).get("expected", "")
            lines.append(f"{source}: {path}: got {_shown(value)}; allowed: {expected}")
        elif kind == "union_tag_not_found":
            lines.append(f"{source}: {path}: an action needs a 'type'; allowed: "
                         + ", ".join(tags))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(value, dict | list) else f"got {_shown(value)}: "
            lines.append(f"{source}: {path}: {shown}{_shown(msg, quoted=False, limit=1000)}")
        if len(lines) >= _MAX_ERRORS:
            lines.append(f"{source}: ... and more errors")
            break
    return f"invalid policy {source}:\n  " + "\n  ".join(lines)


_MAX_ERRORS = 10
# Values are shown short: a value can be huge (a long string, an expanded alias).
_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 4, 4, 2


def _shown(value: Any, *, quoted: bool = True, limit: int = 200) -> str:
    text = _REPR.repr(value) if quoted else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys a policy mapping at ``loc`` may hold (best effort, for error messages)."""
    target: Any = model
    for part in loc:
        target = _step(target, part)
        if target is None:
            return []
    if isinstance(target, type) and issubclass(target, BaseModel):
        return list(target.model_fields)
    return []


def _step(target: Any, part: Any) -> Any:
    if isinstance(target, type) and issubclass(target, BaseModel):
        field = target.model_fields.get(str(part))
        return None if field is None else _unwrap(field.annotation)
    origin = get_origin(target)
    if origin is list and isinstance(part, int):
        return _unwrap(get_args(target)[0])
    if isinstance(part, str):  # a discriminated union member, named by its tag
        for member in get_args(target):
            field = getattr(member, "model_fields", {}).get("type")
            if field is not None and field.default == part:
                return member
    return None


def _unwrap(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not NoneType]
        if len(members) == 1:
            return _unwrap(members[0])
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return models[0]
        return Union[tuple(members)]  # noqa: UP007 - rebuilt for the tag lookup in _step
    return annotation
