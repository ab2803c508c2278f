"""A LlamaIndex evaluator backed by SemGrad, for RetryQueryEngine and its siblings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.evaluation.base import BaseEvaluator, EvaluationResult
from llama_index.core.prompts.mixin import PromptDictType

from semgrad_guard import ConfigError, ScoringError, UncertaintyScore
from semgrad_guard.policy import PolicyConfig, Rule, Scorer, Threshold, load_policy

from .base import SemGradLLM
from .scores import answer_prompt


class SemGradEvaluator(BaseEvaluator):
    """Passes a response when its SemGrad uncertainty is within a threshold.

    The score is the one the :class:`SemGradLLM` computed when it generated the
    response (exact ids), found by the response's text. A response the LLM did not
    produce (another LLM, or an answer that fell out of its history) is re-scored by
    ``scorer`` against LlamaIndex's question-answering prompt over the contexts; that
    score is flagged ``retokenized`` and the feedback says so. A response that cannot
    be scored fails (fail closed) unless ``fail_open=True``.

    ``EvaluationResult.score`` is the raw uncertainty (**higher = more uncertain**);
    ``passing`` says whether it is at or under the threshold. Give the threshold as
    ``max_score=`` or take it from a policy file with :meth:`from_policy`, so that the
    evaluator and the guarded query engine read the same rule.

    With ``RetryQueryEngine`` an uncertain answer is retried with the feedback appended
    to the query; ``RetrySourceQueryEngine`` retries over the response's source nodes.

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
                 method: str = "semgrad", fail_open: bool = False) -> None:
        if llm is None and scorer is None:
            raise ConfigError("SemGradEvaluator needs the SemGradLLM that answers (llm=) or a "
                              "scorer for answers known only as text (scorer=)")
        if (max_score is None) == (threshold is None):
            raise ConfigError("give exactly one of max_score and threshold")
        self.llm = llm
        self.scorer = scorer if scorer is not None else (llm.scorer if llm else None)
        self.threshold = threshold if threshold is not None \
            else Threshold.model_validate({"max_score": max_score})
        self.method = method
        self.fail_open = fail_open

    @classmethod
    def from_policy(cls, policy: PolicyConfig | str, chain_name: str, *,
                    llm: SemGradLLM | None = None, scorer: Scorer | None = None,
                    tags: Sequence[str] = (), metadata: dict[str, Any] | None = None
                    ) -> SemGradEvaluator:
        """The evaluator for the rule a policy gives the chain ``chain_name``: its score,
        threshold and failure mode (``fail_open`` passes, the others fail)."""
        if not isinstance(policy, PolicyConfig):
            policy = load_policy(policy)
        rule: Rule = policy.rule_for(chain_name, tags, metadata)
        return cls(llm, scorer=scorer, threshold=rule.threshold, method=rule.score,
                   fail_open=rule.on_score_failure == "fail_open")

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts_dict: PromptDictType) -> None:
        return None

    # -- the score of a response -----------------------------------------------------------------
    def score_response(self, query: str | None, response: str,
                       contexts: Sequence[str] | None = None) -> UncertaintyScore:
        """The score of ``response``: the LLM's own (exact ids) if it produced it, else a
        re-tokenised one. Raises :class:`ScoringError` when neither is possible."""
        call = self.llm.find_call(response) if self.llm is not None else None
        if call is not None and call.score is not None:
            score = call.score
        elif call is not None and self.scorer is not None:
            score = self.scorer.score_generation(call.generation)
        elif self.scorer is not None:
            score = self.scorer.score_text(answer_prompt(query or "", contexts or ()), response)
        else:
            raise ScoringError("the response was not produced by this evaluator's LLM and "
                               "no scorer was given to re-score it")
        return score if score.method == self.method else score.with_method(self.method)

    def evaluate(self, query: str | None = None, response: str | None = None,
                 contexts: Sequence[str] | None = None, **kwargs: Any) -> EvaluationResult:
        if response is None or not response.strip():
            return self._unscored(query, response, contexts, "the response is empty")
        try:
            score = self.score_response(query, response, contexts)
        except (ScoringError, KeyError) as exc:
            return self._unscored(query, response, contexts, f"{type(exc).__name__}: {exc}")
        return self._judged(query, response, contexts, score)

    async def aevaluate(self, query: str | None = None, response: str | None = None,
                        contexts: Sequence[str] | None = None, **kwargs: Any
                        ) -> EvaluationResult:
        return await asyncio.to_thread(self.evaluate, query, response, contexts)

    def _judged(self, query: str | None, response: str, contexts: Sequence[str] | None,
                score: UncertaintyScore) -> EvaluationResult:
        passing = self.threshold.passes(score.value)
        limit = (f"max_score {self.threshold.max_score:g}" if self.threshold.max_score is not None
                 else f"max_error_probability {self.threshold.max_error_probability:g}")
        how = "re-tokenised answer" if score.retokenized else "exact generation ids"
        verdict = "within" if passing else "over"
        feedback = (f"{score.method} uncertainty {score.value:.4g} is {verdict} {limit} "
                    f"({how}).")
        if not passing:
            feedback += " The answer is uncertain; answer again using the context."
        return EvaluationResult(query=query, response=response, contexts=contexts,
                                passing=passing, score=score.value, feedback=feedback)

    def _unscored(self, query: str | None, response: str | None, contexts: Sequence[str] | None,
                  why: str) -> EvaluationResult:
        mode = "fail_open: passed" if self.fail_open else "fail_closed: treated as uncertain"
        return EvaluationResult(query=query, response=response, contexts=contexts,
                                passing=self.fail_open, score=None,
                                feedback=f"the answer could not be scored ({why}); {mode}.",
                                invalid_result=True, invalid_reason=why)
