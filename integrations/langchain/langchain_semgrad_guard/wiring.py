"""What a guarded chain needs from the chain it wraps, checked when it is built.

- **Scores.** A guard decides on a score: from the chain's
  :class:`~langchain_semgrad_guard.ChatSemGrad` (it scores its own answers) or from the
  guard's scorer. A chain whose visible models are all others, with a guard that has no
  scorer, would fail to score every answer and abstain (or pass, per
  ``on_score_failure``) on all of them: that is a :class:`ConfigError`. A chain that
  shows no model at all (a function, a factory) cannot be checked: a
  :class:`~semgrad_guard.errors.ConfigWarning` says so.
- **Retrievers.** A ``retry_with_retrieval`` action naming ``retrievers`` switches the
  chain's ``configurable_alternatives`` under the id ``retriever``; a name the chain does
  not have would be ignored by LangChain and still recorded as used: a
  :class:`ConfigError` names it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable
from langchain_core.runnables.configurable import RunnableConfigurableAlternatives
from pydantic import BaseModel
from semgrad_guard.errors import ConfigError, ConfigWarning
from semgrad_guard.policy import Guard, Rule
from semgrad_guard.policy.config import RetryWithRetrievalAction


def visible_models(chain: Runnable) -> list[BaseLanguageModel] | None:
    """The language models in a chain's graph (``None`` when it has no graph to read)."""
    try:
        graph = chain.get_graph()
    except Exception:  # noqa: BLE001 - a graph LangChain cannot draw is one we cannot read
        return None
    return [node.data for node in graph.nodes.values()
            if isinstance(node.data, BaseLanguageModel)]


def check_scores(chain: Runnable | None, guard: Guard) -> None:
    """Refuse a chain whose answers no one can score (see the module's text)."""
    if _has_scorer(guard):
        return
    from .chat_models import ChatSemGrad

    models = visible_models(chain) if chain is not None else None
    if models and not any(isinstance(m, ChatSemGrad) and m.score_answers for m in models):
        names = ", ".join(sorted({type(m).__name__ for m in models}))
        raise ConfigError(
            f"the chain's models ({names}) do not score their answers and the guard has no "
            f"scorer, so every answer would go unscored; use ChatSemGrad, or give "
            f"guard_chain(..., model=LocalModel) or scorer=")
    if not models:
        what = "a chain factory" if chain is None else f"the {type(chain).__name__}"
        warnings.warn(
            f"the guard has no scorer and {what} shows no chat model, so only answers of a "
            f"ChatSemGrad inside it will be scored; any other answer goes unscored and "
            f"follows on_score_failure. Give guard_chain(..., model=) or scorer= to score "
            f"them", ConfigWarning, stacklevel=3)


def _has_scorer(guard: Guard) -> bool:
    scorer = guard.scorer
    return bool(scorer) if isinstance(scorer, Mapping) else scorer is not None


def alternative_names(chain: Runnable, field: str) -> list[str] | None:
    """The names a chain's ``configurable_alternatives`` under the id ``field`` answer
    to (the default's included), or ``None`` when it has none.

    Read from the runnables themselves: the enum of ``config_specs`` is cached by
    LangChain per field id, so two chains with the same id can show each other's names.
    """
    names: list[str] = []
    found = False
    seen: set[int] = set()
    todo: list[Any] = [chain]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, RunnableConfigurableAlternatives) and item.which.id == field:
            found = True
            names += [*item.alternatives, item.default_key]
        if isinstance(item, BaseModel):
            todo += [getattr(item, name) for name in type(item).model_fields]
        elif isinstance(item, Mapping):
            todo += list(item.values())
        elif isinstance(item, list | tuple):
            todo += list(item)
    return list(dict.fromkeys(names)) if found else None


def check_retrievers(chain: Runnable, rule: Rule, field: str) -> None:
    """Refuse a rule whose retries name retrievers the chain cannot switch to."""
    wanted = [name for action in rule.actions if isinstance(action, RetryWithRetrievalAction)
              for name in action.retrievers]
    if not wanted:
        return
    known = alternative_names(chain, field)
    missing = [name for name in dict.fromkeys(wanted) if name not in (known or [])]
    if known is None:
        raise ConfigError(
            f"rule {rule.name!r} retries with the retrievers {', '.join(missing)}, but the "
            f"chain has no alternatives under the configurable id {field!r}: give its "
            f"retriever .configurable_alternatives(ConfigurableField(id={field!r}), "
            f"{missing[0]}=..., ...), or pass a chain factory (attempt -> chain) that picks "
            f"attempt.retriever")
    if missing:
        raise ConfigError(
            f"rule {rule.name!r} retries with the retrievers {', '.join(missing)}, which the "
            f"chain's {field!r} alternatives do not have (it has: {', '.join(known)})")
