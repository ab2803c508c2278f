"""Agent middleware: score every model turn, gate every tool call by its score.

:class:`SemGradMiddleware` plugs into LangChain v1 agents (``create_agent``):

- ``wrap_model_call`` scores each model turn (the score a
  :class:`~langchain_semgrad_guard.ChatSemGrad` answer carries, else the guard's
  scorer, re-tokenised) and decides, once, under the policy: for each tool call the
  rule named after the tool (``run_name`` = the tool's name, tag ``tool-call``,
  metadata ``tool``), for a final answer the agent's rule. Score and decisions are
  cached in agent state (``semgrad``, keyed by the turn's message id).
- ``wrap_tool_call`` applies the cached decision: ``pass`` runs the tool, ``abstain``
  answers it with an explanatory error ``ToolMessage`` instead, ``escalate`` pauses the run
  with LangGraph ``interrupt()`` (or leaves the pause to
  ``HumanInTheLoopMiddleware``, see :meth:`SemGradMiddleware.interrupt_on`).
  A resumed run reads the cached decision again: nothing is re-scored, so it decides
  the same way, and the review case is submitted once.
- A final answer the policy abstains from is replaced by the abstention; an escalated
  one pauses in ``after_model`` until a reviewer decides.

Resume with ``Command(resume=...)``: a Human-in-the-loop decision (``{"type":
"approve"}``, ``{"type": "edit", "edited_action": {...}}``, ``{"type": "reject"}``), a
decided review case, or :func:`resume_from_review` to answer every pending interrupt
from the review queue. Each case records its run's ``thread_id``, so that
:class:`ReviewResumer` can resume a run when its case is decided, in any process.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, cast

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse, OmitFromInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command, Interrupt, interrupt
from semgrad_guard import UncertaintyScore
from semgrad_guard.errors import CaseNotFoundError, ConfigError
from semgrad_guard.policy import AttemptResult, Guard, GuardDecision

from .messages import answer_text, json_args, message_text, to_chat_messages
from .tracing import atrace_decision_run, trace_decision_run

#: The ``interrupt()`` value's ``type`` for a SemGrad escalation.
INTERRUPT_TYPE = "semgrad_review"
#: The tag every tool-call rule lookup carries.
TOOL_CALL_TAG = "tool-call"

# A tool call's gate says what the decision says: pass, abstain or escalate. Agent state
# checkpointed by the previous release may still say allow / block.
_LEGACY_GATES = {"allow": "pass", "block": "abstain"}


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class SemGradAgentState(AgentState[Any]):
    """Agent state with the cached score and decisions of every model turn.

    ``semgrad`` maps a model turn's message id to ``{"score", "value", "method",
    "tool_calls": {tool_call_id: gate}, "answer": decision}``; each gate says
    ``action`` (``pass`` / ``abstain`` / ``escalate``), ``reason``, ``case_id``.
    """

    # LangGraph reads the reducer from the last annotation.
    semgrad: NotRequired[Annotated[dict[str, Any], OmitFromInput, _merge]]


class SemGradMiddleware(AgentMiddleware[SemGradAgentState, Any]):
    """Scores each model turn of an agent and gates its tool calls under a policy.

    ``guard`` holds the policy (and the scorer for models other than ``ChatSemGrad``,
    the audit trail and the review queue). ``agent_name`` is the run name whose rule
    judges final answers; ``tools`` limits gating to these tool names (default: all).
    ``escalation="interrupt"`` pauses with ``interrupt()`` itself; ``"hitl"`` leaves the
    pause to a ``HumanInTheLoopMiddleware`` built with :meth:`interrupt_on`.

    >>> from semgrad_guard.policy import Guard, PolicyConfig
    >>> policy = PolicyConfig.from_dict({"version": 1,
    ...     "default": {"threshold": {"max_score": 0.01}, "actions": ["abstain"]}})
    >>> middleware = SemGradMiddleware(Guard(policy))
    >>> middleware.state_schema is SemGradAgentState
    True
    """

    state_schema = SemGradAgentState

    def __init__(self, guard: Guard, *, agent_name: str = "agent",
                 tools: Sequence[str] | None = None, tags: Sequence[str] = (),
                 escalation: Literal["interrupt", "hitl"] = "interrupt",
                 guard_answers: bool = True) -> None:
        super().__init__()
        if not isinstance(guard, Guard):
            raise ConfigError(f"SemGradMiddleware needs a semgrad_guard.policy.Guard, got "
                              f"{type(guard).__name__}")
        if escalation not in ("interrupt", "hitl"):
            raise ConfigError(f"escalation {escalation!r}: expected 'interrupt' or 'hitl'")
        self.guard = guard
        self.agent_name = agent_name
        self.gated_tools = None if tools is None else set(tools)
        self.tags = list(tags)
        self.escalation = escalation
        self.guard_answers = guard_answers

    # -- scoring a turn, once ------------------------------------------------------------------
    def _turn(self, request: ModelRequest[Any], response: ModelResponse[Any]
              ) -> tuple[int, AIMessage, str, list[dict[str, Any]], AttemptResult]:
        index = max((i for i, m in enumerate(response.result) if isinstance(m, AIMessage)),
                    default=-1)
        if index < 0:
            raise ConfigError("the model returned no AIMessage to score")
        ai = cast(AIMessage, response.result[index])
        if ai.id is None:
            ai = ai.model_copy(update={"id": f"semgrad-{uuid.uuid4().hex}"})
        history: list[BaseMessage] = list(request.messages)
        if request.system_message is not None:
            history.insert(0, request.system_message)
        question = next((message_text(m) for m in reversed(request.messages)
                         if isinstance(m, HumanMessage)), "")
        prompt = to_chat_messages(history)
        return (index, ai, question, prompt,
                AttemptResult.from_metadata(answer_text(ai), ai.response_metadata,
                                            prompt=prompt))

    def _tool_rule_args(self, name: str, call_id: str | None) -> dict[str, Any]:
        return {"run_name": name, "tags": [*self.tags, TOOL_CALL_TAG],
                "metadata": {"tool": name, "tool_call_id": call_id, **_thread()}}

    def _gated(self, name: str) -> bool:
        return self.gated_tools is None or name in self.gated_tools

    def _entry(self, message: AIMessage, score: UncertaintyScore | None,
               tool_decisions: Mapping[str, GuardDecision],
               answer: GuardDecision | None) -> dict[str, Any]:
        chosen = next(iter(tool_decisions.values()), answer)
        if chosen is not None and chosen.score is not None:
            score = chosen.score
        gates: dict[str, Any] = {}
        for call in message.tool_calls:
            decision = tool_decisions.get(str(call["id"]))
            if decision is None:
                gates[str(call["id"])] = {"name": call["name"], "action": "pass",
                                          "reason": "tool not gated", "case_id": None}
                continue
            rule = self.guard.rule_for(**self._tool_rule_args(call["name"], call["id"]))
            gates[str(call["id"])] = {
                "name": call["name"], "args": call["args"], "action": decision.action,
                "rule": decision.rule, "reason": decision.reason, "case_id": decision.case_id,
                "message": decision.answer, "value": decision.value, "method": rule.score,
                "threshold": rule.threshold.limit}
        return {
            "method": None if score is None else score.method,
            "value": None if score is None else score.value,
            "scores": None if score is None else dict(score.scores),
            "retokenized": None if score is None else score.retokenized,
            "tool_calls": gates,
            "answer": None if answer is None else {
                "action": answer.action, "rule": answer.rule, "reason": answer.reason,
                "case_id": answer.case_id, "answer": answer.answer,
                "chosen_answer": answer.chosen_answer, "value": answer.value},
        }

    def _finish(self, response: ModelResponse[Any], index: int, message: AIMessage,
                entry: dict[str, Any], answer: GuardDecision | None) -> ExtendedModelResponse[Any]:
        if answer is not None and answer.action != "pass":
            # The abstention (or the pending message) replaces the uncertain answer.
            message = message.model_copy(update={"content": answer.answer or ""})
        result = list(response.result)
        result[index] = message
        return ExtendedModelResponse(
            model_response=ModelResponse(result=result,
                                         structured_response=response.structured_response),
            command=Command(update={"semgrad": {str(message.id): entry}}))

    def wrap_model_call(
        self, request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ExtendedModelResponse[Any]:
        """Run the model, score its turn and decide its tool calls (or its answer)."""
        response = handler(request)
        index, message, question, prompt, turn = self._turn(request, response)
        score, error = self._score(question, turn)
        tools: dict[str, GuardDecision] = {}
        answer = None
        for call in message.tool_calls:
            if self._gated(call["name"]):
                tools[str(call["id"])] = self.guard.check(
                    question, _call_text(call), score=score, score_error=error, prompt=prompt,
                    **self._tool_rule_args(call["name"], call["id"]))
        if not message.tool_calls and self.guard_answers:
            answer = self.guard.check(question, turn.answer, score=score, score_error=error,
                                      prompt=prompt, run_name=self.agent_name, tags=self.tags,
                                      metadata=_thread())
        config = _graph_config()
        for decision in (*tools.values(), answer):
            if config is not None and decision is not None:
                trace_decision_run(decision, config, None,
                                   self.guard.policy.rule(decision.rule).threshold)
        return self._finish(response, index, message, self._entry(message, score, tools, answer),
                            answer)

    async def awrap_model_call(
        self, request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ExtendedModelResponse[Any]:
        """The async twin of :meth:`wrap_model_call` (scoring runs off the event loop)."""
        import asyncio

        response = await handler(request)
        index, message, question, prompt, turn = self._turn(request, response)
        score, error = await asyncio.to_thread(self._score, question, turn)
        tools: dict[str, GuardDecision] = {}
        answer = None
        for call in message.tool_calls:
            if self._gated(call["name"]):
                tools[str(call["id"])] = await self.guard.acheck(
                    question, _call_text(call), score=score, score_error=error, prompt=prompt,
                    **self._tool_rule_args(call["name"], call["id"]))
        if not message.tool_calls and self.guard_answers:
            answer = await self.guard.acheck(question, turn.answer, score=score,
                                             score_error=error, prompt=prompt,
                                             run_name=self.agent_name, tags=self.tags,
                                             metadata=_thread())
        config = _graph_config()
        for decision in (*tools.values(), answer):
            if config is not None and decision is not None:
                await atrace_decision_run(decision, config, None,
                                          self.guard.policy.rule(decision.rule).threshold)
        return self._finish(response, index, message, self._entry(message, score, tools, answer),
                            answer)

    def _score(self, question: str, turn: AttemptResult
               ) -> tuple[UncertaintyScore | None, Exception | None]:
        """One score for the whole turn, shared by its tool calls, or why there is none
        (each check then applies its rule's ``on_score_failure`` to it)."""
        if turn.score is not None or turn.score_error is not None:
            return turn.score, turn.score_error
        rule = self.guard.rule_for(self.agent_name, self.tags)
        try:
            return self.guard.score(rule, question, turn), None
        except Exception as exc:  # noqa: BLE001 - each check applies its rule's failure mode
            return None, exc

    # -- gating tool calls -----------------------------------------------------------------------
    @staticmethod
    def gate(state: Mapping[str, Any], tool_call_id: str | None) -> dict[str, Any] | None:
        """The cached decision on one tool call, from agent state."""
        for entry in (state.get("semgrad") or {}).values():
            gate = (entry.get("tool_calls") or {}).get(str(tool_call_id))
            if gate is not None:
                return dict(gate)
        return None

    def _abstained(self, request: ToolCallRequest, gate: Mapping[str, Any]) -> ToolMessage:
        call = request.tool_call
        value, threshold = gate.get("value"), gate.get("threshold")
        why = "its score could not be computed" if value is None else (
            f"{gate.get('method') or 'score'} {value:.3g}"
            + ("" if threshold is None else f" is over the threshold {threshold:.3g}"))
        return ToolMessage(
            content=(f"The tool call {call['name']} was not run: the model was not certain "
                     f"enough of it ({why}). {gate.get('message') or ''}").strip(),
            name=call["name"], tool_call_id=call["id"], status="error")

    def _review(self, request: ToolCallRequest, gate: Mapping[str, Any]
                ) -> ToolCallRequest | ToolMessage:
        """Pause for the reviewer; the run resumes here with their decision."""
        call = request.tool_call
        value = {"type": INTERRUPT_TYPE, "case_id": gate.get("case_id"),
                 "tool_call_id": call["id"], "name": call["name"], "args": call["args"],
                 "value": gate.get("value"), "rule": gate.get("rule"),
                 "description": f"Uncertain tool call {call['name']}({json.dumps(call['args'])})"
                                f": {gate.get('reason')}",
                 "allowed_decisions": ["approve", "edit", "reject"]}
        decision = review_decision(interrupt(value), _queue_of(self.guard, gate.get("rule")))
        if decision["type"] == "approve":
            return request
        if decision["type"] == "edit":
            edited = decision["edited_action"]
            return request.override(tool_call={**call, "args": dict(edited["args"])})
        reason = decision.get("message")
        return ToolMessage(
            content=f"A reviewer rejected the tool call {call['name']}"
                    + (f": {reason}" if reason else ". The tool was not run."),
            name=call["name"], tool_call_id=call["id"], status="error")

    def _apply(self, request: ToolCallRequest) -> ToolCallRequest | ToolMessage:
        gate = self.gate(request.state, request.tool_call.get("id"))
        action = None if gate is None else _LEGACY_GATES.get(gate["action"], gate["action"])
        if gate is None or action == "pass":
            return request
        if action == "abstain":
            return self._abstained(request, gate)
        if self.escalation == "hitl":
            return request  # HumanInTheLoopMiddleware paused before the tools ran
        return self._review(request, gate)

    def wrap_tool_call(
        self, request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        """Run (pass), refuse (abstain) or escalate one tool call, as its cached decision
        says."""
        outcome = self._apply(request)
        return outcome if isinstance(outcome, ToolMessage) else handler(outcome)

    async def awrap_tool_call(
        self, request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        """The async twin of :meth:`wrap_tool_call`."""
        outcome = self._apply(request)
        return outcome if isinstance(outcome, ToolMessage) else await handler(outcome)

    # -- escalated final answers -------------------------------------------------------------------
    def after_model(self, state: SemGradAgentState, runtime: Runtime[Any]
                    ) -> dict[str, Any] | None:
        """Pause on an escalated final answer; the reviewer's decision becomes the answer."""
        if self.escalation != "interrupt":
            return None
        messages = state.get("messages") or []
        last = messages[-1] if messages else None
        if not isinstance(last, AIMessage) or last.tool_calls:
            return None
        entry = (state.get("semgrad") or {}).get(str(last.id)) or {}
        answer = entry.get("answer") or {}
        if answer.get("action") != "escalate":
            return None
        resume = interrupt({"type": INTERRUPT_TYPE, "case_id": answer.get("case_id"),
                            "tool_call_id": None, "answer": answer.get("chosen_answer"),
                            "value": answer.get("value"), "rule": answer.get("rule"),
                            "description": f"Uncertain answer: {answer.get('reason')}",
                            "allowed_decisions": ["approve", "edit", "reject"]})
        decision = review_decision(resume, _queue_of(self.guard, answer.get("rule")))
        if decision["type"] == "approve":
            content = answer.get("chosen_answer") or ""
        elif decision["type"] == "edit":
            content = str(decision["edited_action"]["args"].get("answer", ""))
        else:
            content = decision.get("message") or "A reviewer rejected this answer."
        return {"messages": [last.model_copy(update={"content": content})]}

    async def aafter_model(self, state: SemGradAgentState, runtime: Runtime[Any]
                           ) -> dict[str, Any] | None:
        """The async twin of :meth:`after_model`."""
        return self.after_model(state, runtime)

    # -- composing with HumanInTheLoopMiddleware ---------------------------------------------------
    def needs_review(self, request: ToolCallRequest) -> bool:
        """``HumanInTheLoopMiddleware``'s ``when=`` predicate: the cached decision on
        this tool call is ``escalate``. Reads agent state, so a resumed run agrees."""
        gate = self.gate(request.state, request.tool_call.get("id"))
        return gate is not None and gate["action"] == "escalate"

    def interrupt_on(self, tools: Sequence[str]) -> dict[str, Any]:
        """``interrupt_on`` for ``HumanInTheLoopMiddleware``: each tool pauses only when
        this middleware escalated its call (build this middleware with
        ``escalation="hitl"`` and list it before the human-in-the-loop one)."""
        def describe(tool_call: Any, state: Any, runtime: Any) -> str:
            gate = self.gate(state, tool_call.get("id")) or {}
            return (f"Uncertain tool call {tool_call['name']}({json.dumps(tool_call['args'])})"
                    f": {gate.get('reason')} (review case {gate.get('case_id')})")

        return {name: {"allowed_decisions": ["approve", "edit", "reject"],
                       "when": self.needs_review, "description": describe} for name in tools}


def _thread() -> dict[str, Any]:
    """The LangGraph thread of the running agent, recorded with its review cases so that
    a decision can resume the right run (see :class:`ReviewResumer`)."""
    config = _graph_config()
    configurable = (config.get("configurable") if config is not None else None) or {}
    thread = configurable.get("thread_id")
    return {} if thread is None else {"thread_id": str(thread)}


def _queue_of(guard: Guard, rule: Any) -> Any:
    """The review queue of a rule's escalations (the guard's only queue if unknown)."""
    if isinstance(rule, str):
        try:
            queue = guard.queue_for(rule)
        except ConfigError:
            queue = None
        if queue is not None:
            return queue
    return guard.review_queue


def _find_case(guard: Guard, case_id: str) -> Any:
    """The case with that id (or unique prefix) in whichever of the guard's review queues
    holds it; ``CaseNotFoundError`` naming them all if none does."""
    queues = guard.review_queues
    for queue in queues:
        try:
            return queue.get(case_id)
        except CaseNotFoundError:
            continue
    raise CaseNotFoundError(f"no escalated case has id {case_id!r} in "
                            + (", ".join(q.location for q in queues) or "no review queue"))


def _call_text(call: Mapping[str, Any]) -> str:
    """A tool call as the review case shows it (and as an edit may rewrite it)."""
    return json.dumps({"name": call["name"], "arguments": call["args"]}, ensure_ascii=False)


def review_decision(value: Any, queue: Any = None, *, name: str = "") -> dict[str, Any]:
    """A human-in-the-loop decision (``approve`` / ``edit`` / ``reject``) from what a
    run was resumed with: such a decision itself, a ``{"decisions": [...]}`` response,
    a decided review case (``EscalatedCase`` or its ``to_dict()``), or a case id
    (looked up in ``queue``).

    An edited case's ``final_answer`` is read as JSON tool arguments (or a
    ``{"name", "arguments"}`` call); any other text is an edited answer. ``name`` is
    the tool an edit applies to (``HumanInTheLoopMiddleware`` checks it).

    >>> review_decision({"type": "approve"})
    {'type': 'approve'}
    >>> review_decision({"status": "edited", "final_answer": '{"city": "Rome"}'})
    {'type': 'edit', 'edited_action': {'name': '', 'args': {'city': 'Rome'}}}
    """
    if isinstance(value, str):
        if queue is None:
            raise ConfigError("resumed with a review case id but no review queue to read it")
        value = queue.get(value)
    if isinstance(value, Mapping) and "decisions" in value:
        decisions = list(value["decisions"])
        if len(decisions) != 1:
            raise ConfigError(f"expected one decision, got {len(decisions)}")
        value = decisions[0]
    if not isinstance(value, Mapping):
        value = value.to_dict() if hasattr(value, "to_dict") else value
    if not isinstance(value, Mapping):
        raise ConfigError(f"cannot resume with a {type(value).__name__}")
    if value.get("type") in ("approve", "edit", "reject"):
        return dict(value)
    status = value.get("status")
    if status == "approved":
        return {"type": "approve"}
    if status == "edited":
        text = str(value.get("final_answer") or "")
        args = json_args(text)
        if args is not None and isinstance(args.get("arguments"), dict):
            return {"type": "edit", "edited_action": {"name": str(args.get("name") or name),
                                                      "args": args["arguments"]}}
        if args is not None:
            return {"type": "edit", "edited_action": {"name": name, "args": args}}
        return {"type": "edit", "edited_action": {"name": name, "args": {"answer": text}}}
    if status == "rejected":
        reason = value.get("reason")
        return {"type": "reject", **({"message": reason} if reason else {})}
    if status == "pending":
        raise ConfigError(f"review case {value.get('id')} is still pending")
    raise ConfigError(f"cannot read a reviewer decision from {dict(value)!r}")


def resume_from_review(interrupts: Sequence[Interrupt], queue: Any) -> Command[Any]:
    """A ``Command(resume=...)`` answering every SemGrad interrupt of a paused run with
    its review case's decision.

    ``interrupts`` is the paused run's ``result["__interrupt__"]`` (or
    ``agent.get_state(config).interrupts``); ``queue`` is the review queue, or the
    :class:`~semgrad_guard.policy.Guard` (each case is then read from the queue its
    rule escalates to, whether given to the guard or named in the policy file).

    >>> from langgraph.types import Interrupt
    >>> from semgrad_guard.review import open_review_queue
    >>> queue = open_review_queue("sqlite:///:memory:")
    >>> case = queue.submit(chain="send_email", question="Email Sam", answer="{}", score=0.9)
    >>> _ = queue.reject(case.id, reviewer="ann", reason="no such address")
    >>> paused = [Interrupt(value={"type": INTERRUPT_TYPE, "case_id": case.id,
    ...                            "name": "send_email"}, id="i-1")]
    >>> resume_from_review(paused, queue).resume
    {'i-1': {'type': 'reject', 'message': 'no such address'}}
    """
    answers: dict[str, Any] = {}
    for item in _review_interrupts(interrupts):
        value = item.value
        source = _queue_of(queue, value.get("rule")) if isinstance(queue, Guard) else queue
        if source is None:
            raise ConfigError("resumed with a review case but no review queue to read it")
        answers[item.id] = review_decision(source.get(value["case_id"]),
                                           name=str(value.get("name") or ""))
    if not answers:
        raise ConfigError("no SemGrad review interrupt to answer")
    return Command(resume=answers)


def _graph_config() -> Any:
    """The config of the graph node running now (``None`` outside a graph run): decisions
    recorded under it join the agent's trace."""
    try:
        return get_config()
    except RuntimeError:
        return None


def _review_interrupts(interrupts: Sequence[Interrupt]) -> list[Interrupt]:
    return [item for item in interrupts
            if isinstance(item.value, Mapping) and item.value.get("type") == INTERRUPT_TYPE]


class ReviewResumer:
    """Resumes an agent's runs paused for review, once their cases are decided.

    Durable with a durable checkpointer (``SqliteSaver``, ``PostgresSaver``): the paused
    run lives in the checkpointer, the case (with its run's ``thread_id``) in the
    review queue, and this joins the two again in any process, after any restart.

    - :meth:`attach` makes every decision taken through the guard's queue objects (the
      review page served by this process, ``queue.approve(...)``) resume its run at once,
      through ``queue.on_decision``;
    - :meth:`resume_decided` resumes the runs whose cases were decided elsewhere or while
      the process was down (run it at start, and on a timer if reviewers use the command
      line or another process's page);
    - :meth:`resume` resumes the run of one case (a webhook receiver's entry point).

    A run paused on several cases resumes when the last is decided; a run already resumed
    is left alone, so each of these may be called again. ``on_result(thread_id, result)``
    receives what a resumed run returned (a run may pause again, for another call).

    >>> from langgraph.checkpoint.memory import InMemorySaver
    >>> from semgrad_guard.policy import Guard, PolicyConfig
    >>> from semgrad_guard.review import open_review_queue
    >>> guard = Guard(PolicyConfig.from_dict({"version": 1, "default": {
    ...     "threshold": {"max_score": 0.5}, "actions": ["escalate"]}}),
    ...     review_queue=open_review_queue("sqlite:///:memory:"))
    >>> from langchain.agents import create_agent
    >>> from langchain_core.language_models import GenericFakeChatModel
    >>> agent = create_agent(GenericFakeChatModel(messages=iter([])),
    ...                      middleware=[SemGradMiddleware(guard)], checkpointer=InMemorySaver())
    >>> ReviewResumer(agent, guard).attach().resume_decided()
    []
    """

    def __init__(self, agent: Any, guard: Guard, *,
                 on_result: Callable[[str, Any], Any] | None = None) -> None:
        if not isinstance(guard, Guard):
            raise ConfigError(f"ReviewResumer needs the agent's semgrad_guard.policy.Guard, got "
                              f"{type(guard).__name__}")
        if getattr(agent, "checkpointer", None) is None:
            raise ConfigError("ReviewResumer needs an agent built with a checkpointer (a "
                              "SqliteSaver or PostgresSaver to survive restarts)")
        self.agent = agent
        self.guard = guard
        self.on_result = on_result
        self._lock = threading.Lock()
        self._attached = False

    def attach(self) -> ReviewResumer:
        """Resume runs as soon as their cases are decided through the guard's queues
        (registered once, however often this is called)."""
        with self._lock:
            if not self._attached:
                for queue in self.guard.review_queues:
                    queue.on_decision(self.resume)
                self._attached = True
        return self

    def resume(self, case: Any) -> Any:
        """Resume the run that waits for this case (an ``EscalatedCase`` or its id), if
        every case it waits for is decided; returns what the run returned, else ``None``."""
        if isinstance(case, str):
            case = _find_case(self.guard, case)
        thread = case.metadata.get("thread_id") if isinstance(case.metadata, Mapping) else None
        if thread is None:
            return None
        config: Any = {"configurable": {"thread_id": thread}}
        with self._lock:  # two decisions of one run arriving together resume it once
            waiting = _review_interrupts(self.agent.get_state(config).interrupts)
            if not any(item.value.get("case_id") == case.id for item in waiting):
                return None
            for item in waiting:
                queue = _queue_of(self.guard, item.value.get("rule"))
                if not queue.get(item.value["case_id"]).is_decided:
                    return None
            result = self.agent.invoke(resume_from_review(waiting, self.guard), config)
        if self.on_result is not None:
            self.on_result(str(thread), result)
        return result

    def resume_decided(self) -> list[str]:
        """Resume every run whose cases were decided; returns their thread ids.

        Reads the decided cases of the guard's queues (purge old ones to keep this quick).
        """
        from semgrad_guard.review.queue import MAX_LIST

        resumed: list[str] = []
        seen: set[str] = set()
        for queue in self.guard.review_queues:
            for status in ("approved", "edited", "rejected"):
                for case in queue.list(status=status, limit=MAX_LIST):
                    thread = case.metadata.get("thread_id")
                    if thread is None or thread in seen:
                        continue
                    seen.add(thread)
                    if self.resume(case) is not None:
                        resumed.append(str(thread))
        return resumed
