"""Constrained decoding holds even a random model to a grammar: a tiny random Llama that
speaks the default model's vocabulary writes valid JSON only when held to it."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from semgrad_guard import ConfigError, LocalModel
from semgrad_guard.model import Grammar, default_model_path

SCHEMA = {"type": "object", "required": ["ok", "n", "colour"],
          "properties": {"ok": {"type": "boolean"},
                         "n": {"type": "integer", "minimum": 0, "maximum": 9},
                         "colour": {"enum": ["red", "blue"]}}}
PROMPTS = ["What is the colour of the sky?", "Name a number.", "Is water wet?"]


@pytest.fixture(scope="module")
def random_model() -> LocalModel:
    """A random 2-layer Llama over SmolLM2's tokenizer (its real vocabulary, no weights)."""
    import torch

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return LocalModel(LlamaForCausalLM(config).eval(), tokenizer, name="random-llama")


def held(lm: LocalModel, grammar: Grammar) -> LogitsProcessorList:
    return LogitsProcessorList([grammar.logits_processor(lm.tokenizer, lm.eos_ids)])


def test_a_random_model_writes_json_valid_under_the_schema_only_when_held(
        random_model: LocalModel) -> None:
    grammar = Grammar.json_schema(SCHEMA)
    free = random_model.generate_batch(PROMPTS, max_new_tokens=30)
    assert not any(g.text.startswith("{") for g in free)  # the grammar does the work
    held_answers = random_model.generate_batch(PROMPTS, max_new_tokens=40,
                                               logits_processor=held(random_model, grammar))
    for generation in held_answers:  # every row of the batch, each with its own matcher
        value = json.loads(generation.text)
        assert set(value) == {"ok", "n", "colour"} and isinstance(value["ok"], bool)
        assert 0 <= value["n"] <= 9 and value["colour"] in ("red", "blue")
        assert generation.stop_reason == "eos"  # the grammar, once complete, ends the turn
        assert generation.response_ids[-1] in random_model.eos_ids
        assert grammar.matches(random_model.tokenizer, generation.text)


def test_objects_take_no_fields_beyond_their_properties(random_model: LocalModel) -> None:
    grammar = Grammar.json_schema({"type": "object", "properties": {"a": {"type": "null"}}})
    assert grammar.matches(random_model.tokenizer, '{"a": null}')
    assert not grammar.matches(random_model.tokenizer, '{"a": null, "b": 1}')
    assert not grammar.matches(random_model.tokenizer, '{ "a":null}')  # one way to write it


def test_a_lark_grammar_embeds_json(random_model: LocalModel) -> None:
    bounded = Grammar.json_rule({"type": "integer", "minimum": 0, "maximum": 99})
    grammar = Grammar.lark(f'start: "<call>" {bounded} "</call>"')
    generation = random_model.generate(PROMPTS[0], max_new_tokens=20,
                                       logits_processor=held(random_model, grammar))
    assert generation.text.startswith("<call>") and generation.text.endswith("</call>")
    assert 0 <= int(generation.text[len("<call>"):-len("</call>")]) <= 99


def test_an_answer_cut_short_is_left_incomplete_not_made_up(random_model: LocalModel) -> None:
    grammar = Grammar.json_schema(SCHEMA)
    generation = random_model.generate(PROMPTS[0], max_new_tokens=3,
                                       logits_processor=held(random_model, grammar))
    assert generation.stop_reason == "length"
    assert not grammar.matches(random_model.tokenizer, generation.text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(generation.text)


def test_a_bad_grammar_is_refused_when_built() -> None:
    with pytest.raises(ConfigError, match="cannot constrain generation to a Lark grammar"):
        Grammar.lark("start: undefined_rule")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        Grammar.json_schema(["not", "a", "schema"])  # type: ignore[arg-type]
