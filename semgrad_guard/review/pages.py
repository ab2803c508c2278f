"""The HTML of the review page: Jinja2 templates shipped in ``templates/``, autoescaped.

Everything shown comes from model output or from the escalating application, so
nothing is marked safe: autoescaping covers every ``{{ }}``, and the page sends no
script at all (its Content-Security-Policy forbids scripts). The one style sheet is
``static/review.css``, served from ``/static/review.css``.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from ..scoring.result import SCORE_MEANINGS
from .case import GUARD_METADATA_KEYS, EscalatedCase

#: The style sheet the pages link to.
STYLESHEET = "review.css"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _score(value: float | None) -> str:
    if value is None:
        return "not computed"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3e}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def why_escalated(case: EscalatedCase) -> dict[str, Any]:
    """What the case page says about why a reviewer sees the case, from what the guard
    put in its metadata: the rule's threshold, what the score measures, every attempt
    and which one was kept. Cases submitted without it show what they have."""
    meta = case.metadata
    threshold = meta.get("threshold") if isinstance(meta.get("threshold"), dict) else None
    method = str(meta.get("method") or (threshold or {}).get("score") or "") or None
    attempts = meta.get("attempts")
    attempts = [a for a in attempts if isinstance(a, dict)] \
        if isinstance(attempts, list) else []
    chosen = meta.get("chosen_attempt")
    return {
        "threshold": threshold,
        "method": method,
        "meaning": SCORE_MEANINGS.get(method or ""),
        "keep": meta.get("keep"),
        "chosen": chosen if isinstance(chosen, int) and 0 <= chosen < len(attempts) else None,
        "attempts": attempts,
        "metadata": {k: v for k, v in meta.items()
                     if k not in GUARD_METADATA_KEYS or not _guard_shaped(k, v)},
    }


def _guard_shaped(key: str, value: Any) -> bool:
    # A caller's own key that happens to share a guard key's name stays visible.
    if key == "attempts":
        return isinstance(value, list)
    if key == "threshold":
        return isinstance(value, dict)
    return True


def page_templates() -> Environment:
    """The template environment; ``autoescape=True`` is what keeps model output inert."""
    env = Environment(
        loader=PackageLoader("semgrad_guard.review", "templates"),
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, score=_score, pretty=_pretty)
    env.globals.update(why_escalated=why_escalated)
    return env


def stylesheet() -> bytes:
    """The page's CSS, read from the package."""
    return resources.files("semgrad_guard.review").joinpath("static", STYLESHEET).read_bytes()
