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

#: The style sheet the pages link to.
STYLESHEET = "review.css"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _score(value: float | None) -> str:
    if value is None:
        return "not computed"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3e}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def page_templates() -> Environment:
    """The template environment; ``autoescape=True`` is what keeps model output inert."""
    env = Environment(
        loader=PackageLoader("semgrad_guard.review", "templates"),
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, score=_score, pretty=_pretty)
    return env


def stylesheet() -> bytes:
    """The page's CSS, read from the package."""
    return resources.files("semgrad_guard.review").joinpath("static", STYLESHEET).read_bytes()
