"""ChatSemGrad on the real default model: exact ids and the score in response_metadata,
through invoke, ainvoke, stream, astream and bound tools."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from semgrad_guard.errors import ScoringError
from semgrad_guard.testing import ScriptedScorer

from langchain_semgrad_guard import ChatSemGrad, parse_tool_calls, score_from_metadata

pytestmark = pytest.mark.real_model

QUESTION = [SystemMessage("Answer in a few words."),
            HumanMessage("What is the chemical symbol of gold?")]


@pytest.fixture(scope="module")
def answer(chat: ChatSemGrad) -> AIMessage:
    return chat.invoke(QUESTION)  # type: ignore[return-value]


def test_invoke_carries_the_exact_ids_and_their_score(chat: ChatSemGrad,
                                                      answer: AIMessage) -> None:
    meta = answer.response_metadata
    prompt = [{"role": "system", "content": "Answer in a few words."},
              {"role": "user", "content": "What is the chemical symbol of gold?"}]
    assert meta["prompt_ids"] == chat.model.prompt_ids(prompt)
    assert chat.model.tokenizer.decode(meta["response_ids"], skip_special_tokens=True
                                       ).strip() == answer.content
    assert meta["finish_reason"] in ("stop", "length")
    score = score_from_metadata(meta)
    assert score is not None and not score.retokenized
    assert score.direction == "higher_is_more_uncertain"
    # The carried score is the score of exactly those ids.
    assert chat.scorer is not None
    again = chat.scorer.score_batch([(meta["prompt_ids"], meta["response_ids"])])[0]  # type: ignore[attr-defined]
    # Same ids, same pass; float32 sums in another order (the thread count and kernels
    # earlier tests of a session leave set) move this question's SemGrad by up to 1.6e-4.
    assert score.value == pytest.approx(again.value, rel=1e-3)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == len(meta["response_ids"])


@pytest.mark.asyncio
async def test_ainvoke_and_astream_keep_the_event_loop_free(chat: ChatSemGrad,
                                                            answer: AIMessage) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        result = await chat.ainvoke(QUESTION)
        chunks = [c async for c in chat.astream(QUESTION)]
    finally:
        ticker.cancel()
    assert ticks > 10  # the loop kept running while the model generated and scored
    assert result.content == answer.content
    assert result.response_metadata["response_ids"] == answer.response_metadata["response_ids"]
    assert "".join(str(c.content) for c in chunks) == answer.content
    assert chunks[-1].response_metadata["semgrad"]["value"] == pytest.approx(
        answer.response_metadata["semgrad"]["value"], rel=1e-5)


def test_stream_sends_text_first_and_the_score_with_the_final_chunk(
        chat: ChatSemGrad, answer: AIMessage) -> None:
    chunks = list(chat.stream(QUESTION))
    assert len(chunks) > 2
    assert all("semgrad" not in c.response_metadata for c in chunks[:-1])
    assert chunks[-1].chunk_position == "last"
    merged: AIMessageChunk = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == answer.content
    assert merged.response_metadata["response_ids"] == answer.response_metadata["response_ids"]
    assert merged.response_metadata["semgrad"]["value"] == pytest.approx(
        answer.response_metadata["semgrad"]["value"], rel=1e-5)


def test_answers_scored_while_generated_equal_the_default_two_passes(
        chat: ChatSemGrad, answer: AIMessage) -> None:
    meta = answer.response_metadata
    assert "decode_with_graph" not in meta["semgrad"]["timings"]  # two passes, by default
    scored_while_generated = ChatSemGrad(model=chat.model, scorer=chat.scorer,
                                         max_new_tokens=12, fused=True).invoke(QUESTION)
    fused = scored_while_generated.response_metadata["semgrad"]
    assert "decode_with_graph" in fused["timings"]
    assert meta["response_ids"] == scored_while_generated.response_metadata["response_ids"]
    # float32 rounding apart: within 1.4e-5 relative on 16 SciQ answers
    # (benchmarks/float32_floor.md); the two paths agree within 1e-6 in float64.
    for name, value in meta["semgrad"]["features"].items():
        assert fused["features"][name] == pytest.approx(value, rel=1e-4, abs=1e-9), name


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return "sunny"


DEMO = [HumanMessage("What is the weather in Rome?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Rome"},
                                   "id": "demo-1"}])]


def test_bound_tools_reach_the_prompt_and_tool_calls_come_back(chat: ChatSemGrad) -> None:
    model = ChatSemGrad(model=chat.model, scorer=chat.scorer, max_new_tokens=32,
                        tool_examples=DEMO)
    reply = model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    prompt = chat.model.tokenizer.decode(reply.response_metadata["prompt_ids"])
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.response_metadata["semgrad"] is not None
    streamed = list(model.bind_tools([get_weather]).stream("What is the weather in Paris?"))
    last = streamed[-1]
    assert isinstance(last, AIMessageChunk)
    assert [c["name"] for c in last.tool_call_chunks] == ["get_weather"]


def test_an_answer_that_cannot_be_scored_says_why(chat: ChatSemGrad) -> None:
    model = ChatSemGrad(model=chat.model, scorer=ScriptedScorer([ScoringError("no grad")]),
                        max_new_tokens=2)
    reply = model.invoke("Hi")
    assert reply.response_metadata["semgrad"] is None
    assert reply.response_metadata["semgrad_error"] == "ScoringError: no grad"


@pytest.mark.parametrize(("text", "names", "n_invalid"), [
    ('<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>', ["a"], 0),
    ('<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{}"}]'
     '</tool_call>', ["a", "b"], 0),
    ('<tool_call>{"name": "a", "arguments": {"x": ', [], 1),
    ('<tool_call>{"name": "a", "arguments": {"x": 1}}</', ["a"], 0),
    ('<tool_call>{"arguments": {}}</tool_call>', [], 1),
    ("No tools needed.", [], 0),
])
def test_tool_calls_are_read_in_the_hermes_format(text: str, names: list[str],
                                                  n_invalid: int) -> None:
    _, calls, invalid = parse_tool_calls(text)
    assert [c["name"] for c in calls] == names
    assert len(invalid) == n_invalid


def test_unknown_fields_are_rejected(chat: ChatSemGrad) -> None:
    with pytest.raises(ValueError, match="api_key"):
        ChatSemGrad(model=chat.model, api_key="sk-")  # type: ignore[call-arg]


def test_langchains_standard_parameters_mean_what_they_say(chat: ChatSemGrad,
                                                           answer: AIMessage) -> None:
    words = str(answer.content).split()
    assert len(words) >= 2, answer.content
    model = ChatSemGrad(model=chat.model.name, scorer=chat.scorer, temperature=0,
                        max_tokens=12, stop=[f" {words[1]}"], timeout=60, max_retries=2)
    assert model.model is chat.model  # the name finds the model already loaded
    stopped = model.invoke(QUESTION)  # greedy: the same answer, cut at the stop string
    assert stopped.content == words[0]
    assert stopped.response_metadata["stop_reason"] == "stop_string"
    short = chat.invoke(QUESTION, max_tokens=2)  # per call, too
    assert len(short.response_metadata["response_ids"]) == 2
    assert short.response_metadata["finish_reason"] == "length"
    with pytest.raises(ValueError, match="greedy"):
        ChatSemGrad(model=chat.model, temperature=0, do_sample=True)


def test_timeout_ends_generation_where_it_stands(chat: ChatSemGrad) -> None:
    model = ChatSemGrad(model=chat.model, scorer=chat.scorer, max_tokens=64, timeout=1e-3)
    reply = model.invoke(QUESTION)
    assert 1 <= len(reply.response_metadata["response_ids"]) < 64
    assert reply.response_metadata["finish_reason"] == "length"


def test_streaming_true_makes_invoke_stream_to_the_callbacks(chat: ChatSemGrad) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: object) -> None:
            self.tokens.append(token)

    tokens = Tokens()
    model = ChatSemGrad(model=chat.model, scorer=chat.scorer, max_tokens=8, streaming=True)
    reply = model.invoke(QUESTION, config={"callbacks": [tokens]})
    assert len(tokens.tokens) > 1 and "".join(tokens.tokens) == reply.content
    assert reply.response_metadata["semgrad"] is not None


def test_a_call_cannot_switch_models(chat: ChatSemGrad) -> None:
    from semgrad_guard import ConfigError

    with pytest.raises(ConfigError, match="cannot switch to 'gpt-4o'"):
        chat.invoke("Hi", model="gpt-4o")


def test_tokens_are_counted_by_the_models_own_tokenizer(chat: ChatSemGrad,
                                                        answer: AIMessage) -> None:
    text = "SemGrad scores answers of local models."
    assert chat.get_num_tokens(text) == len(chat.model.tokenizer.encode(
        text, add_special_tokens=False)) > 0
    # Messages count as the exact prompt the model saw, template and all.
    assert chat.get_num_tokens_from_messages(QUESTION) == len(
        answer.response_metadata["prompt_ids"])
    with_tools = chat.get_num_tokens_from_messages(QUESTION, tools=[get_weather])
    assert with_tools > len(answer.response_metadata["prompt_ids"])


def test_the_model_serialises_by_name_and_loads_back(chat: ChatSemGrad) -> None:
    from langchain_core.load import dumpd, dumps, load

    model = ChatSemGrad(model=chat.model, max_tokens=7, temperature=0, stop=["\n"])
    data = dumpd(model)
    assert data["id"] == ["langchain_semgrad_guard", "chat_models", "ChatSemGrad"]
    assert data["kwargs"]["model"] == "SmolLM2-135M-Instruct"
    assert len(dumps(model)) < 2000  # a name and settings, never weights
    again = load(data, valid_namespaces=["langchain_semgrad_guard"],
                 allowed_objects=[ChatSemGrad])
    assert isinstance(again, ChatSemGrad) and again.model is chat.model
    assert (again.max_new_tokens, again.temperature, again.stop) == (7, 0, ["\n"])
    assert again._identifying_params == model._identifying_params


def test_init_chat_model_has_no_table_entry_to_reach_it() -> None:
    # langchain 1.5 builds chat models from a closed table of its own; a provider
    # outside it is refused. Construct ChatSemGrad directly (README, "LangChain").
    # When this fails, langchain has opened the table: register the provider there.
    from langchain.chat_models import init_chat_model

    with pytest.raises(ValueError, match="Unsupported provider='semgrad'"):
        init_chat_model("SmolLM2-135M-Instruct", model_provider="semgrad")

