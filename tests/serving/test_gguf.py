"""Any GGUF file loads as a Hugging Face model: converted once, cached by content."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from semgrad_guard import LocalModel, SemGradScorer
from semgrad_guard.errors import GGUFConversionError, ModelLoadError
from semgrad_guard.model.default_model import default_gguf_path
from semgrad_guard.model.gguf import converted_path, gguf_architecture

from .tiny_gguf import write_tiny_gguf


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEMGRAD_GUARD_CACHE", str(folder))
    return folder


def _weights_file(folder: Path) -> Path:
    return next(folder.glob("*.safetensors"))


def test_a_gguf_file_loads_with_its_weights_and_scores(tmp_path: Path, cache: Path) -> None:
    tensors = write_tiny_gguf(tmp_path / "tiny.gguf", "qwen2")
    lm = LocalModel.load(tmp_path / "tiny.gguf")
    assert type(lm.model).__name__ == "Qwen2ForCausalLM"
    assert lm.name == "tiny" and lm.prompt_format.kind == "chat"
    embed = lm.model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(embed, tensors["token_embd.weight"])
    bias = lm.model.model.layers[1].self_attn.v_proj.bias.detach().numpy()
    np.testing.assert_array_equal(bias, tensors["blk.1.attn_v.bias"])
    generation = lm.generate("the sky is", max_new_tokens=4)
    score = SemGradScorer(lm, profile=None).score_generation(generation)
    assert np.isfinite(score.value) and score.value > 0


def test_conversion_is_cached_by_content_for_any_path(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "a").mkdir()
    write_tiny_gguf(tmp_path / "a" / "model.gguf", "qwen2")
    first = converted_path(tmp_path / "a" / "model.gguf")
    stamp = _weights_file(first).stat().st_mtime_ns
    # The folder form, and a copy of the same bytes elsewhere, reuse the conversion.
    assert converted_path(tmp_path / "a") == first
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf")
    assert converted_path(tmp_path / "b") == first
    assert _weights_file(first).stat().st_mtime_ns == stamp
    # Different weights under the same name convert anew.
    write_tiny_gguf(tmp_path / "b" / "model.gguf", "qwen2", seed=1)
    assert converted_path(tmp_path / "b") != first
    lm = LocalModel.load(tmp_path / "a")
    assert lm.name == "model" and type(lm.model).__name__ == "Qwen2ForCausalLM"


def test_quantized_tensors_are_dequantized(tmp_path: Path, cache: Path) -> None:
    tensors = write_tiny_gguf(tmp_path / "q8.gguf", "llama", quantize=True)
    assert gguf_architecture(tmp_path / "q8.gguf") == "llama"
    lm = LocalModel.load(tmp_path / "q8.gguf")
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    embed = lm.model.get_input_embeddings().weight.detach().numpy()
    original = tensors["token_embd.weight"]
    assert not np.array_equal(embed, original)  # Q8_0 rounding happened...
    assert np.abs(embed - original).max() < 2e-3  # ...and was undone to within its step


def test_an_unsupported_architecture_is_named(tmp_path: Path, cache: Path) -> None:
    write_tiny_gguf(tmp_path / "rwkv.gguf", "rwkv7")
    with pytest.raises(GGUFConversionError, match="'rwkv7'") as caught:
        LocalModel.load(tmp_path / "rwkv.gguf")
    assert caught.value.architecture == "rwkv7"
    assert isinstance(caught.value, ModelLoadError)
    assert not any(cache.glob("gguf/rwkv-*/config.json"))


def test_bad_gguf_inputs_raise_typed_errors(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFConversionError, match="not a readable GGUF"):
        LocalModel.load(tmp_path / "junk.gguf")
    two = tmp_path / "two"
    two.mkdir()
    write_tiny_gguf(two / "a.gguf")
    write_tiny_gguf(two / "b.gguf")
    with pytest.raises(ModelLoadError, match=r"2 GGUF files \(a.gguf, b.gguf\)"):
        LocalModel.load(two)
    shard = tmp_path / "model-00001-of-00002.gguf"
    shutil.copy(two / "a.gguf", shard)
    with pytest.raises(GGUFConversionError, match="split GGUF"):
        LocalModel.load(shard)


@pytest.mark.real_model
def test_the_default_gguf_file_reuses_the_default_models_cache(default_lm: LocalModel) -> None:
    lm = LocalModel.load(default_gguf_path())
    assert lm.name == default_lm.name
    for mine, theirs in zip(lm.model.parameters(), default_lm.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
