"""The guard's decisions in LangChain traces.

A guarded chain and the agent middleware record each decision as a child run named
``semgrad_guard`` under the run that was decided on: its metadata holds the decision's
flat attributes (``semgrad_guard.action``, ``semgrad_guard.score``,
``semgrad_guard.rule``, ... as :func:`semgrad_guard.policy.telemetry.decision_attributes`
gives them), its outputs the whole decision (``GuardDecision.to_dict()``). Every
callback handler sees it (``on_chain_start`` / ``on_chain_end``), LangSmith shows it in
the trace and can filter runs by its metadata, and ``astream_events`` streams it.

>>> from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
>>> from semgrad_guard.policy import GuardDecision
>>> decision = GuardDecision(action="pass", answer="Au", passed=True, score=None,
...     error_probability=None, attempts=[], rule="default", case_id=None,
...     reason="score under threshold", question="Gold?", chosen_answer="Au")
>>> runs = RunCollectorCallbackHandler()
>>> trace_decision_run(decision, {"callbacks": [runs]})
>>> run = runs.traced_runs[0]
>>> run.name, run.extra["metadata"]["semgrad_guard.action"], run.outputs["action"]
('semgrad_guard', 'pass', 'pass')
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import ensure_config
from semgrad_guard.policy import GuardDecision
from semgrad_guard.policy.config import Threshold
from semgrad_guard.policy.telemetry import decision_attributes

#: The name of the run each decision is recorded as.
DECISION_RUN_NAME = "semgrad_guard"


def _decision_run(decision: GuardDecision, config: RunnableConfig | None,
                  run_name: str | None, threshold: Threshold | None
                  ) -> tuple[RunnableLambda[Any, Any], dict[str, Any], RunnableConfig]:
    config = ensure_config(config)
    run: RunnableLambda[Any, Any] = RunnableLambda(lambda _: decision.to_dict(),
                                                  name=DECISION_RUN_NAME)
    inputs = {"question": decision.question, "answer": decision.chosen_answer}
    child: RunnableConfig = {
        **config, "run_name": DECISION_RUN_NAME,
        "tags": [*config.get("tags", []), DECISION_RUN_NAME],
        "metadata": {**config.get("metadata", {}),
                     **decision_attributes(decision, run_name, threshold)}}
    return run, inputs, child


def trace_decision_run(decision: GuardDecision, config: RunnableConfig | None,
                       run_name: str | None = None, threshold: Threshold | None = None
                       ) -> None:
    """Record ``decision`` as a ``semgrad_guard`` run under the run of ``config``."""
    run, inputs, child = _decision_run(decision, config, run_name, threshold)
    run.invoke(inputs, child)


async def atrace_decision_run(decision: GuardDecision, config: RunnableConfig | None,
                              run_name: str | None = None, threshold: Threshold | None = None
                              ) -> None:
    """The async twin of :func:`trace_decision_run`."""
    run, inputs, child = _decision_run(decision, config, run_name, threshold)
    await run.ainvoke(inputs, child)
