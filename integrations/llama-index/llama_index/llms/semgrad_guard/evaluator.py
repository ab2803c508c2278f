"""A LlamaIndex evaluator backed by SemGrad, for RetryQueryEngine and its siblings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.response.schema import Response
from llama_index.core.evaluation.base import BaseEvaluator, EvaluationResult
from llama_index.core.prompts.mixin import PromptDictType

from semgrad_guard import ConfigError, UncertaintyScore
from semgrad_guard.errors import EmptyResponseError
from semgrad_guard.policy import (
    AttemptResult,
    Guard,
    GuardDecision,
    PolicyConfig,
    Rule,
    Scorer,
    Threshold,
)

from .base import SemGradLLM
from .instrumentation import decision_metadata, dispatch_decision, ensure_instrumented
from .scores import answer_prompt


class SemGradEvaluator(BaseEvaluator):
    """Passes a response when the policy passes it.

    The decision is :meth:`Guard.check <semgrad_guard.policy.Guard.check>`'s, under one
    threshold (``max_score=`` or ``threshold=``, on ``method``; an uncertain answer
    fails) or under the rule a policy gives the chain (:meth:`from_policy`, or
    ``guard=`` with ``chain_name=``), so that the evaluator and the guarded query engine
    decide alike. A response passes when the decision's action is ``pass``.

    The score is the one the :class:`SemGradLLM` computed when it generated the
    response (exact ids), found by the response's text among its recent answers. A
    response the LLM did not produce (another LLM, or an answer that fell out of its
    history) is re-scored by ``scorer`` against LlamaIndex's question-answering prompt
    over the contexts; that score is flagged ``retokenized`` and the feedback says so.
    A response that cannot be scored follows the rule's ``on_score_failure``: fail
    closed (fails), ``fail_open`` (passes, ``fail_open=True`` here), or ``raise``.

    ``EvaluationResult.score`` is the raw uncertainty (**higher = more uncertain**).
    With ``RetryQueryEngine`` an uncertain answer is retried with the feedback appended
    to the query; ``RetrySourceQueryEngine`` retries over the response's source nodes.
    Every response it evaluates is marked: its ``metadata`` gets ``semgrad``,
    ``guard_decision`` and ``uncertain``. LlamaIndex returns the answer of the last retry
    without evaluating it; the evaluator decides on that one too (through the
    instrumentation span of the query, :class:`ScoreSpanHandler`), so a
    ``RetryQueryEngine`` whose every retry failed returns its answer marked
    ``uncertain``. Each decision is also a :class:`GuardDecisionEvent`.

    >>> llm = SemGradLLM(max_new_tokens=16)
    >>> evaluator = SemGradEvaluator(llm=llm, max_score=1e-3)
    >>> answer = llm.complete("What is the chemical symbol of gold?").text
    >>> evaluator.evaluate(query="What is the chemical symbol of gold?", response=answer).passing
    True

    In a query engine (``index`` is any LlamaIndex index)::

        from llama_index.core.query_engine import RetryQueryEngine
        engine = RetryQueryEngine(index.as_query_engine(llm=llm), evaluator, max_retries=2)
    """

    def __init__(self, llm: SemGradLLM | None = None, *, scorer: Scorer | None = None,
                 max_score: float | None = None, threshold: Threshold | None = None,
                 method: str = "semgrad", fail_open: bool = False, guard: Guard | None = None,
                 chain_name: str | None = None, tags: Sequence[str] = (),
                 metadata: Mapping[str, Any] | None = None) -> None:
        if guard is not None:
            if max_score is not None or threshold is not None or fail_open or scorer is not None:
                raise ConfigError("a guard brings its own rules and scorer; give max_score, "
                                  "threshold, fail_open and scorer without one")
        else:
            if llm is None and scorer is None:
                raise ConfigError("SemGradEvaluator needs the SemGradLLM that answers (llm=) "
                                  "or a scorer for answers known only as text (scorer=)")
            if (max_score is None) == (threshold is None):
                raise ConfigError("give exactly one of max_score and threshold")
            limit = threshold if threshold is not None \
                else Threshold.model_validate({"max_score": max_score})
            guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
                "score": method, "threshold": limit, "actions": ["abstain"],
                "on_score_failure": "fail_open" if fail_open else "fail_closed"}}),
                scorer=scorer if scorer is not None else (llm.scorer if llm else None))
        self.llm = llm
        self.guard = guard
        self.chain_name = chain_name
        self.tags = tuple(tags)
        self.metadata = dict(metadata or {})
        self.scorer = guard.scorer_for(self.rule)
        ensure_instrumented()  # so that RetryQueryEngine's last answer is judged too

    @classmethod
    def from_policy(cls, policy: Guard | PolicyConfig | Mapping[str, Any] | str | Path,
                    chain_name: str, *, llm: SemGradLLM | None = None,
                    scorer: Scorer | None = None, tags: Sequence[str] = (),
                    metadata: dict[str, Any] | None = None) -> SemGradEvaluator:
        """The evaluator deciding under the rule a policy (a file, dict, ``PolicyConfig``
        or ``Guard``) gives the chain ``chain_name``: its score, threshold, actions and
        failure mode."""
        if not isinstance(policy, Guard) and scorer is None and llm is not None:
            scorer = llm.scorer
        guard = Guard.from_policy(policy, scorer=scorer)
        return cls(llm, guard=guard, chain_name=chain_name, tags=tags, metadata=metadata)

    @property
    def rule(self) -> Rule:
        """The policy rule that decides."""
        return self.guard.rule_for(self.chain_name, self.tags, self.metadata)

    @property
    def threshold(self) -> Threshold:
        return self.rule.threshold

    @property
    def method(self) -> str:
        return self.rule.score

    @property
    def fail_open(self) -> bool:
        return self.rule.on_score_failure == "fail_open"

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts_dict: PromptDictType) -> None:
        return None

    # -- the score of a response -----------------------------------------------------------------
    def _attempt(self, query: str | None, response: str | None,
                 contexts: Sequence[str] | None) -> AttemptResult:
        """What the guard decides on: the LLM's own answer (exact ids, and its score or
        scoring error) when it wrote the response, else the text, to be re-scored."""
        text = response or ""
        fields: dict[str, Any] = {"context": list(contexts or ()),
                                  "prompt": answer_prompt(query or "", contexts or ())}
        if not text.strip():
            return AttemptResult(text, score_error=EmptyResponseError("the response is empty"),
                                 **fields)
        call = self.llm.find_call(text) if self.llm is not None else None
        return AttemptResult(text, **fields) if call is None else call.attempt(text, **fields)

    def score_response(self, query: str | None, response: str,
                       contexts: Sequence[str] | None = None) -> UncertaintyScore:
        """The score of ``response`` under the rule's method: the LLM's own (exact ids) if
        it produced it, else a re-tokenised one. Raises what scoring raised."""
        return self.guard.score(self.rule, query or "",
                                self._attempt(query, response, contexts))

    def evaluate(self, query: str | None = None, response: str | None = None,
                 contexts: Sequence[str] | None = None, **kwargs: Any) -> EvaluationResult:
        return self._result(query, response, contexts,
                            self._decide(query, response, contexts))

    async def aevaluate(self, query: str | None = None, response: str | None = None,
                        contexts: Sequence[str] | None = None, **kwargs: Any
                        ) -> EvaluationResult:
        return self._result(query, response, contexts,
                            await self._adecide(query, response, contexts))

    def evaluate_response(self, query: str | None = None, response: Response | None = None,
                          **kwargs: Any) -> EvaluationResult:
        """Evaluate a query engine's response, and mark it: its ``metadata`` gets the
        score (``semgrad``), the decision (``guard_decision``) and ``uncertain``."""
        text, contexts = _text_and_contexts(response)
        decision = self._decide(query, text, contexts)
        _mark(response, decision)
        return self._result(query, text, contexts, decision)

    async def aevaluate_response(self, query: str | None = None,
                                 response: Response | None = None,
                                 **kwargs: Any) -> EvaluationResult:
        """The async twin of :meth:`evaluate_response`."""
        text, contexts = _text_and_contexts(response)
        decision = await self._adecide(query, text, contexts)
        _mark(response, decision)
        return self._result(query, text, contexts, decision)

    def _decide(self, query: str | None, response: str | None,
                contexts: Sequence[str] | None) -> GuardDecision:
        attempt = self._attempt(query, response, contexts)
        decision = self.guard.check(query or "", **self._check_args(attempt))
        dispatch_decision(decision, "SemGradEvaluator")
        return decision

    async def _adecide(self, query: str | None, response: str | None,
                       contexts: Sequence[str] | None) -> GuardDecision:
        attempt = self._attempt(query, response, contexts)
        decision = await self.guard.acheck(query or "", **self._check_args(attempt))
        dispatch_decision(decision, "SemGradEvaluator")
        return decision

    def _check_args(self, attempt: AttemptResult) -> dict[str, Any]:
        return {"answer": attempt.answer, "generation": attempt.generation,
                "score": attempt.score, "score_error": attempt.score_error,
                "context": attempt.context, "prompt": attempt.prompt,
                "run_name": self.chain_name, "tags": self.tags, "metadata": self.metadata}

    def _result(self, query: str | None, response: str | None, contexts: Sequence[str] | None,
                decision: GuardDecision) -> EvaluationResult:
        passing = decision.action == "pass"
        chosen, score = decision.chosen, decision.score
        if chosen is None or score is None:
            why = decision.reason if chosen is None or chosen.error is None else chosen.error
            mode = "fail_open: passed" if "fail_open" in decision.flags \
                else "fail_closed: treated as uncertain"
            return EvaluationResult(query=query, response=response, contexts=contexts,
                                    passing=passing, score=None,
                                    feedback=f"the answer could not be scored ({why}); {mode}.",
                                    invalid_result=True, invalid_reason=why)
        limit = self.threshold
        bound = (f"max_score {limit.max_score:g}" if limit.max_score is not None
                 else f"max_error_probability {limit.max_error_probability:g}")
        how = "re-tokenised answer" if score.retokenized else "exact generation ids"
        verdict = "within" if chosen.passed else "over"
        feedback = f"{score.method} uncertainty {score.value:.4g} is {verdict} {bound} ({how})."
        if decision.action == "escalate":
            feedback += f" Escalated to review case {decision.case_id}."
        if not passing:
            feedback += " The answer is uncertain; answer again using the context."
        return EvaluationResult(query=query, response=response, contexts=contexts,
                                passing=passing, score=score.value, feedback=feedback)


def _text_and_contexts(response: Response | None) -> tuple[str | None, list[str] | None]:
    if response is None:
        return None, None
    return response.response, [node.get_content() for node in response.source_nodes]


def _mark(response: Response | None, decision: GuardDecision) -> None:
    if response is not None:
        response.metadata = {**(response.metadata or {}), **decision_metadata(decision)}
