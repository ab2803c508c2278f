"""Tiny GGUF files written in process: a random two-layer model with a byte-level BPE
tokenizer, in F32 (or Q8_0), for any architecture name (no download, no llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i s", "Ġ is", "a n", "Ġ a"]
HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 32, 64, 4, 2, 2


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what byte-level BPE stores)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def vocabulary() -> list[str]:
    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIALS + _byte_tokens() + merged


def write_tiny_gguf(path: Path, arch: str = "qwen2", *, seed: int = 0,
                    quantize: bool = False) -> dict[str, np.ndarray]:
    """Write a random tiny model; returns its tensors by GGUF name."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = vocabulary()
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    head = HIDDEN // HEADS
    tensors = {"token_embd.weight": weight(len(tokens), HIDDEN),
               "output_norm.weight": np.ones(HIDDEN, np.float32),
               "output.weight": weight(len(tokens), HIDDEN)}
    for i in range(LAYERS):
        tensors.update({
            f"blk.{i}.attn_norm.weight": np.ones(HIDDEN, np.float32),
            f"blk.{i}.attn_q.weight": weight(HIDDEN, HIDDEN),
            f"blk.{i}.attn_q.bias": weight(HIDDEN),
            f"blk.{i}.attn_k.weight": weight(KV_HEADS * head, HIDDEN),
            f"blk.{i}.attn_k.bias": weight(KV_HEADS * head),
            f"blk.{i}.attn_v.weight": weight(KV_HEADS * head, HIDDEN),
            f"blk.{i}.attn_v.bias": weight(KV_HEADS * head),
            f"blk.{i}.attn_output.weight": weight(HIDDEN, HIDDEN),
            f"blk.{i}.ffn_norm.weight": np.ones(HIDDEN, np.float32),
            f"blk.{i}.ffn_gate.weight": weight(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": weight(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": weight(HIDDEN, FFN),
        })
    for name, value in tensors.items():
        if quantize and value.ndim == 2:
            packed = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors
