"""Tiny random models and tokenizers built in process (no files, no network)."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from semgrad_guard import LocalModel

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]
WORDS = ("user assistant system question answer what is the of a to and in color sky blue "
         "red green sun moon water fire earth air who wrote when where why how many cat dog "
         "bird fish tree leaf root stem cell atom energy light heat cold warm day night year "
         "paris london rome city country river sea ocean mountain hill one two three four five "
         "yes no true false maybe please directly following with few words Question Answer "
         "Please : ? . , \n").split(" ")
BPE_VOCAB = 320


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS) - {""}))}
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.WhitespaceSplit(),
         pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_bpe_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (as GPT-2, Llama-3, Qwen and SmolLM use), trained in
    process on the test words: stop strings match on it as on real vocabularies."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    words = [w for w in WORDS if w.strip()]
    tok.train_from_iterator([" ".join(words[i:i + 8]) + "\n" for i in range(len(words))]
                            + ["Question: what is the color of the sky?\nAnswer: blue\n\n"],
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(vocab_size: int = 128, layers: int = 4, tie: bool = False, seed: int = 0,
               dtype: torch.dtype = torch.float32, max_positions: int = 96) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=tie,
                         pad_token_id=0, eos_token_id=2, bos_token_id=1)
    model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    return model


def tiny_local_model(chat: bool = True, **kwargs: object) -> LocalModel:
    return LocalModel(tiny_llama(**kwargs), tiny_tokenizer(chat), name="tiny-llama")  # type: ignore[arg-type]


def shared_component_model() -> LocalModel:
    """A tiny model with a large vocabulary whose output head's rows share one large
    vector (as trained output embeddings do: the default model's mean row has norm 2.2
    against 3.2 per row), confident over the tokenizer's words. Adding one vector to
    every row shifts each position's logits by one constant, so the probabilities, the
    answers and the scores are those of the head without it; but the head's input
    gradient ``sum_v (p_v - [v = y]) W_v`` then sums terms that nearly cancel, which a
    matrix-vector product (a decode step, or an answer of up to three tokens scored
    alone) rounds to 7e-5 relative (an answer of two tokens) and 4e-4 (the fused path)
    here, against 1e-5 summed in blocks."""
    lm = tiny_local_model(vocab_size=32768)
    words = len(lm.tokenizer)
    with torch.no_grad():
        head = lm.layout.lm_head.weight  # [vocabulary, dim], not tied to the embedding
        head[:words] *= 100  # confident, and over the tokenizer's words: they are said
        scale = head.norm(dim=1).mean() / head.shape[1] ** 0.5
        head += 300 * scale * torch.randn(head.shape[1])
    return lm


def tiny_bert_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style tokenizer ([PAD], [unusedN], [UNK], [CLS], [SEP], [MASK], words) whose
    ids all fit the tiny model's embedding: the wrong tokenizer, by its special tokens."""
    specials = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS) - {""}))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_bpe_model(chat: bool = True, **kwargs: object) -> LocalModel:
    """A tiny random model on the byte-level BPE tokenizer, with room for a plain
    prompt's demonstrations."""
    model = tiny_llama(vocab_size=BPE_VOCAB, max_positions=512, **kwargs)  # type: ignore[arg-type]
    return LocalModel(model, tiny_bpe_tokenizer(chat), name="tiny-llama-bpe")


def rule_out_while_scoring(lm: LocalModel, token: int) -> Any:
    """Give ``token`` the logit minus infinity in the scoring pass (the one run with a
    graph) and nowhere else: generation still says it, and an answer that holds it gets
    an infinite negative log-likelihood, a non-finite score."""
    def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> Any:
        if torch.is_grad_enabled():
            return output.index_fill(-1, torch.tensor([token]), float("-inf"))
        return None

    return lm.model.lm_head.register_forward_hook(hook)
