"""Intercept and score every generation of a LangChain run with a callback handler.

LangChain callbacks see every generation but can only observe: a handler stops a run
only by raising, and only when its ``raise_error`` is true. So
:class:`SemGradCallbackHandler` scores each generation, has the guard decide on it
(:meth:`semgrad_guard.policy.Guard.check`, as every integration does), records both,
and in strict mode raises :class:`~semgrad_guard.errors.UncertainAnswerError`
(carrying the decision and its score) for an answer the policy does not pass. To change
what a chain returns (abstain, retry, escalate), wrap it with
:func:`~langchain_semgrad_guard.guard_chain`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel, ConfigDict, Field
from semgrad_guard import LocalModel, SemGradScorer, UncertaintyScore
from semgrad_guard.errors import ConfigError, GuardOutcome, ScoringError, UncertainAnswerError
from semgrad_guard.policy import AuditTrail, Guard, GuardDecision, PolicyConfig, Rule
from semgrad_guard.scoring.metadata import (
    describe_error,
    error_from_metadata,
    generation_from_metadata,
    score_from_metadata,
)
from semgrad_guard.serving import score_served

from .messages import answer_text, to_chat_messages
from .served import served_answer

Prompt = str | list[dict[str, Any]]


class CapturedGeneration(BaseModel):
    """One generation seen by a callback, before scoring."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str = Field(description="The LLM run's id.")
    prompt: Prompt = Field(
        description="The chat messages (chat models) or the prompt text (text LLMs).")
    text: str = Field(description="The answer text (the prompt removed when echoed).")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="The answer's response_metadata (chat models).")
    name: str | None = Field(None, description="The model's run name.")
    chain_names: list[str] = Field(
        default_factory=list,
        description="Run names of the chains the model ran in, innermost first (a "
                    "handler sees them when it is given in the chain's config).")
    tags: list[str] = Field(default_factory=list, description="Tags of the LLM run.")
    run_metadata: dict[str, Any] = Field(default_factory=dict,
                                         description="Metadata of the LLM run.")

    @property
    def question(self) -> str:
        """The last user message (or the prompt text)."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return str(users[-1]) if users else ""


class ScoredGeneration(BaseModel):
    """A generation the handler scored. **Higher score = more uncertain.**

    >>> ScoredGeneration(run_id="r1", question="Capital of France?", text="Paris", score=None,
    ...                  method="semgrad", value=None, threshold=1e-5, passed=False,
    ...                  retokenized=False, source="response_metadata",
    ...                  error="ScoringError: empty response").to_dict()["passed"]
    False
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str = Field(description="The LLM run's id.")
    question: str = Field(description="The last user message (or the prompt text).")
    text: str = Field(description="The answer that was scored.")
    score: UncertaintyScore | None = Field(
        description="The full score, or None when it could not be computed.")
    method: str = Field(description="The score the threshold reads.")
    value: float | None = Field(description="That score's value.")
    threshold: float | None = Field(description="The largest value that passes, if any.")
    passed: bool | None = Field(
        description="Whether the answer passed (None without a threshold).")
    retokenized: bool = Field(
        description="True when the ids were rebuilt from text (a model that does not "
                    "report its ids, e.g. HuggingFacePipeline).")
    source: str = Field(description="Where the score came from: 'response_metadata' "
                                    "(ChatSemGrad), 'exact_ids', 'server_tokens' (a "
                                    "served model's tokens) or 'retokenized'.")
    error: str | None = Field(None, description="Why the score could not be computed.")
    rule: str | None = Field(default=None,
                             description="The policy rule that set the threshold.")
    decision: GuardDecision | None = Field(
        default=None, description="The guard's decision on the answer (None without a threshold).")

    def to_dict(self) -> dict[str, Any]:
        """Plain data; the score as ``UncertaintyScore.to_dict()``, the decision as
        ``GuardDecision.to_dict()``."""
        data = self.model_dump(exclude={"score", "decision"})
        data["score"] = None if self.score is None else self.score.to_dict()
        data["decision"] = None if self.decision is None else self.decision.to_dict()
        return data


def chat_prompt(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Chat-template messages for LangChain messages (tool calls as text)."""
    return to_chat_messages(messages)


class GenerationTracker(BaseCallbackHandler):
    """Remembers each LLM run's prompt until its answer arrives (a base for handlers),
    and the names of the chains it runs in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[UUID, dict[str, Any]] = {}
        self._chains: dict[UUID, tuple[str | None, UUID | None]] = {}

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with self._lock:
            self._chains[run_id] = (kwargs.get("name"), parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._chains.pop(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._chains.pop(run_id, None)

    def _chain_names(self, parent_run_id: UUID | None) -> list[str]:
        names: list[str] = []
        with self._lock:
            while parent_run_id is not None and parent_run_id in self._chains:
                name, parent_run_id = self._chains[parent_run_id]
                if name:
                    names.append(name)
        return names

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            *, run_id: UUID, parent_run_id: UUID | None = None,
                            tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        prompts: list[Prompt] = [chat_prompt(m) for m in messages]
        self._remember(run_id, prompts, kwargs.get("name"), tags, metadata, parent_run_id)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._remember(run_id, list(prompts), kwargs.get("name"), tags, metadata,
                       parent_run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with self._lock:
            self._pending.pop(run_id, None)

    def _remember(self, run_id: UUID, prompts: list[Prompt], name: str | None,
                  tags: list[str] | None, metadata: dict[str, Any] | None,
                  parent_run_id: UUID | None) -> None:
        chains = self._chain_names(parent_run_id)
        with self._lock:
            self._pending[run_id] = {"prompts": prompts, "name": name, "tags": list(tags or []),
                                     "metadata": dict(metadata or {}), "chains": chains}

    def _captured(self, response: LLMResult, run_id: UUID) -> list[CapturedGeneration]:
        with self._lock:
            started = self._pending.pop(run_id, None)
        if started is None:
            return []
        out = []
        for prompt, candidates in zip(started["prompts"], response.generations, strict=False):
            if not candidates:
                continue
            gen = candidates[0]
            metadata: dict[str, Any] = {}
            if isinstance(gen, ChatGeneration):
                metadata = dict(gen.message.response_metadata or {})
                text = answer_text(gen.message)
            else:
                text = gen.text
            out.append(CapturedGeneration(
                run_id=str(run_id), prompt=prompt, text=text, metadata=metadata,
                name=started["name"], chain_names=started["chains"], tags=started["tags"],
                run_metadata=started["metadata"]))
        return out


def strip_echo(prompt: Prompt, text: str, model: LocalModel | None) -> str:
    """The answer without the prompt, for pipelines that return the prompt too
    (``HuggingFacePipeline`` does unless built with ``return_full_text=False``)."""
    if isinstance(prompt, str):
        echoed = prompt
    elif model is not None:
        echoed = model.prompt_format.render(model.tokenizer, prompt)
    else:
        return text
    return text[len(echoed):].strip() if text.startswith(echoed) else text


def retokenized_score(scorer: Any, prompt: Prompt, text: str) -> UncertaintyScore:
    """Score an answer known only as text, flagged ``retokenized``.

    Chat messages go through the chat template; a prompt text (a text LLM such as
    ``HuggingFacePipeline``) is tokenised as it is, the way the pipeline tokenised it.
    """
    model: LocalModel | None = getattr(scorer, "model", None)
    answer = strip_echo(prompt, text, model)
    if isinstance(prompt, str) and model is not None:
        tokenizer = model.tokenizer
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        response_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        return scorer.score_batch([(prompt_ids, response_ids)], retokenized=True)[0]  # type: ignore[no-any-return]
    return scorer.score_text(prompt, answer)  # type: ignore[no-any-return]


class SemGradCallbackHandler(GenerationTracker):
    """Scores every generation of the runs it is attached to, has the policy decide on
    it, records both, and in strict mode raises
    :class:`~semgrad_guard.errors.UncertainAnswerError` for an answer the policy does not
    pass.

    Answers of :class:`~langchain_semgrad_guard.ChatSemGrad` arrive scored (exact ids,
    nothing recomputed). Answers of other local models (``HuggingFacePipeline``,
    ``ChatHuggingFace``) over the same transformers model are re-tokenised and scored
    by ``scorer``, flagged ``retokenized=True`` (build one with :meth:`for_pipeline`).

    The decision is :meth:`Guard.check <semgrad_guard.policy.Guard.check>`'s, under the
    rule that ``policy`` (a file, dict, ``PolicyConfig`` or ``Guard``) gives the LLM run,
    or under ``max_score`` on ``method``: an answer over it is passed on, flagged
    ``uncertain`` (in strict mode it is abstained from). Rules match on the model run's
    name, else on the nearest enclosing chain's run name that a rule names
    (``config={"run_name": "rag"}``; the handler sees chain runs when it is given in the
    chain's config), and on the run's tags and metadata. A score that cannot be
    computed follows the rule's ``on_score_failure``. The handler only observes: what a
    chain returns is unchanged (wrap the chain with
    :func:`~langchain_semgrad_guard.guard_chain` to act). In strict mode the handler
    sets ``raise_error = True``, which LangChain needs to let a handler's exception stop
    the run.

    >>> from langchain_semgrad_guard import ChatSemGrad
    >>> chat = ChatSemGrad.load(max_new_tokens=8)
    >>> handler = SemGradCallbackHandler(max_score=1.0)
    >>> _ = chat.invoke("Name a colour.", config={"callbacks": [handler]})
    >>> handler.records[0].passed, handler.records[0].retokenized
    (True, False)
    """

    def __init__(self, scorer: SemGradScorer | Any | None = None, *,
                 max_score: float | None = None,
                 policy: PolicyConfig | Guard | Mapping[str, Any] | str | Path | None = None,
                 method: str = "semgrad", strict: bool = False,
                 audit: AuditTrail | None = None) -> None:
        super().__init__()
        if max_score is not None and policy is not None:
            raise ConfigError("give max_score or policy, not both")
        if strict and max_score is None and policy is None:
            raise ConfigError("strict mode needs a threshold: give max_score or policy")
        self.guard: Guard | None = None
        if policy is not None:
            self.guard = Guard.from_policy(policy, audit=audit, scorer=None
                                           if isinstance(policy, Guard) else scorer)
        elif max_score is not None:
            self.guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
                "name": "callback", "score": method, "threshold": {"max_score": max_score},
                "actions": ["abstain" if strict else "flag"]}}), scorer=scorer, audit=audit)
        elif audit is not None:
            raise ConfigError("an audit trail records decisions, which need a threshold: "
                              "give max_score or policy")
        self.scorer = scorer
        self.max_score = max_score
        self.policy = None if policy is None or self.guard is None else self.guard.policy
        self.method = method
        self.strict = strict
        self.audit = None if self.guard is None else self.guard.audit
        # LangChain swallows a handler's exceptions unless this is set.
        self.raise_error = strict
        self.records: list[ScoredGeneration] = []

    @classmethod
    def for_pipeline(cls, llm: Any, **kwargs: Any) -> SemGradCallbackHandler:
        """A handler whose scorer wraps the transformers model behind a
        ``HuggingFacePipeline`` or ``ChatHuggingFace`` (re-tokenised scores)."""
        pipeline = getattr(getattr(llm, "llm", llm), "pipeline", None)
        if pipeline is None:
            raise ConfigError(f"{type(llm).__name__} is not a HuggingFacePipeline or a "
                              f"ChatHuggingFace over one")
        local = LocalModel(pipeline.model, pipeline.tokenizer)
        method = kwargs.get("method", "semgrad")
        return cls(SemGradScorer(local, method=method), **kwargs)

    def _rule(self, captured: CapturedGeneration) -> Rule | None:
        if self.guard is None:
            return None
        return self.guard.rule_for(self._run_name(captured), captured.tags,
                                   captured.run_metadata)

    def _run_name(self, captured: CapturedGeneration) -> str | None:
        """The run name rules match on: the model run's own, else the nearest enclosing
        chain's that a rule names (``config={"run_name": "rag"}`` names the chain, not
        the model), else the model run's."""
        if self.guard is None:
            return captured.name
        default = self.guard.policy.default
        for name in (captured.name, *captured.chain_names):
            if self.guard.rule_for(name, captured.tags, captured.run_metadata) is not default:
                return name
        return captured.name

    def on_llm_end(self, response: LLMResult, *, run_id: UUID,
                   parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        for captured in self._captured(response, run_id):
            record, raised = self._judge(captured)
            with self._lock:
                self.records.append(record)
            decision = record.decision
            if self.strict and decision is not None and decision.action != "pass":
                # The rule's own typed outcome when its action raises, else the handler's.
                raise raised or UncertainAnswerError(f"uncertain answer: {decision.reason}",
                                                     decision=decision)

    def score(self, captured: CapturedGeneration) -> ScoredGeneration:
        """Score one captured generation and have the policy decide on it (the decision
        is audited when the guard has an audit trail)."""
        return self._judge(captured)[0]

    def _judge(self, captured: CapturedGeneration
               ) -> tuple[ScoredGeneration, GuardOutcome | None]:
        rule = self._rule(captured)
        scorer = self.scorer
        if scorer is None and self.guard is not None and rule is not None:
            scorer = self.guard.scorer_for(rule)
        score, error, source, text = score_captured(captured, scorer)
        if self.guard is None or rule is None:  # no threshold: scored, not decided
            if score is not None:
                try:
                    score = score.with_method(self.method)
                except KeyError as exc:
                    score, error = None, exc
            return ScoredGeneration(
                run_id=captured.run_id, question=captured.question, text=text, score=score,
                method=self.method, value=None if score is None else score.value,
                threshold=None, passed=None,
                retokenized=bool(score is not None and score.retokenized), source=source,
                error=None if error is None else describe_error(error)), None
        raised: GuardOutcome | None = None
        try:
            decision = self.guard.check(captured.question, text, score=score,
                                        score_error=error, prompt=captured.prompt,
                                        run_name=self._run_name(captured),
                                        tags=captured.tags,
                                        metadata=captured.run_metadata)
        except GuardOutcome as outcome:  # the rule's action raises (raise_error: true)
            decision, raised = outcome.decision, outcome
        chosen = decision.chosen
        return ScoredGeneration(
            run_id=captured.run_id, question=captured.question, text=text,
            score=decision.score, method=rule.score, value=decision.value,
            threshold=rule.threshold.limit, passed=decision.passed,
            retokenized=bool(decision.score is not None and decision.score.retokenized),
            source=source, error=None if chosen is None else chosen.error,
            rule=decision.rule if self.policy is not None else None,
            decision=decision), raised


def score_captured(captured: CapturedGeneration, scorer: Any | None
                   ) -> tuple[UncertaintyScore | None, Exception | None, str, str]:
    """Score one captured generation: the score ``ChatSemGrad`` put in its metadata (or
    the error it recorded), else its exact ids, else a served model's tokens, else a
    re-tokenised score (flagged ``retokenized``).

    Returns ``(score, error, source, text)``: the score or why there is none, where it
    came from (``"response_metadata"``, ``"exact_ids"``, ``"server_tokens"`` or
    ``"retokenized"``) and the answer text that was scored (an echoed prompt removed).
    """
    carried = score_from_metadata(captured.metadata)
    failed = None if carried is not None else error_from_metadata(captured.metadata)
    if carried is not None or failed is not None:
        return carried, failed, "response_metadata", captured.text
    generation = generation_from_metadata(captured.metadata, captured.text)
    served = None if generation is not None else served_answer(captured.metadata, captured.text)
    source = "exact_ids" if generation is not None else \
        "server_tokens" if served is not None else "retokenized"
    text = captured.text if generation is not None or served is not None else strip_echo(
        captured.prompt, captured.text, getattr(scorer, "model", None))
    if scorer is None:
        return None, ScoringError("the answer carries no score and no scorer was given"), \
            source, text
    try:
        if generation is not None:
            return scorer.score_generation(generation), None, source, text
        if served is not None:
            score = score_served(scorer, captured.prompt, served)
            return score, None, "retokenized" if score.retokenized else source, text
        return retokenized_score(scorer, captured.prompt, captured.text), None, source, text
    except Exception as exc:  # noqa: BLE001 - the guard applies on_score_failure to it
        return None, exc, source, text
