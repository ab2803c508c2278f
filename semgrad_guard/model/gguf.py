"""Any GGUF file as a Hugging Face model: de-quantized once by transformers, cached.

SemGrad needs gradients, so a GGUF file (what llama.cpp, Ollama and LM Studio serve) is
de-quantized to a float checkpoint that torch can differentiate. The conversion is slow
(tens of seconds for a small model, minutes for a large one), so its result is saved
under the cache folder, keyed by the file's content hash; later loads of the same
file, from any path, take the cached folder.

>>> from semgrad_guard.model.default_model import default_gguf_path
>>> gguf_architecture(default_gguf_path())
'llama'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import GGUFConversionError, ModelLoadError
from ..paths import cache_dir, cached_folder

_HASH_CHUNK = 16 << 20
# llama.cpp names a few architectures differently from transformers' GGUF loader.
_TRANSFORMERS_NAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                       "minimax-m2": "minimax_m2"}
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True for a ``.gguf`` file, or a folder holding one and no Hugging Face config."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".gguf"
    return p.is_dir() and not (p / "config.json").is_file() and any(p.glob("*.gguf"))


def find_gguf(path: str | os.PathLike[str]) -> Path:
    """The GGUF file at ``path``: the file itself, or the one GGUF file in a folder."""
    p = Path(path)
    if p.is_file():
        if _SHARD.search(p.name):
            raise GGUFConversionError(
                f"{p.name} is one shard of a split GGUF, which transformers cannot "
                f"de-quantize; merge the shards first (llama-gguf-split --merge)")
        return p
    found = sorted(p.glob("*.gguf"))
    if not found:
        raise ModelLoadError(f"no .gguf file in {p}")
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise ModelLoadError(f"{p} holds {len(found)} GGUF files ({names}); name the one to "
                             f"load: LocalModel.load({str(p / found[0].name)!r})")
    return find_gguf(found[0])


def _reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, struct errors, ...
        raise GGUFConversionError(f"{path} is not a readable GGUF file: {exc}") from exc


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def gguf_architecture(path: str | os.PathLike[str]) -> str:
    """The architecture a GGUF file declares (``general.architecture``)."""
    file = find_gguf(path)
    arch = _field(_reader(file), "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFConversionError(f"{file} declares no general.architecture")
    return arch


def supported_architectures() -> list[str]:
    """The GGUF architectures this transformers version can de-quantize."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


def _check_convertible(file: Path) -> str:
    """The architecture, or a typed error naming what cannot be converted."""
    from gguf import GGMLQuantizationType
    from gguf.quants import _type_traits

    reader = _reader(file)
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFConversionError(f"{file} declares no general.architecture")
    supported = supported_architectures()
    if arch not in supported and _TRANSFORMERS_NAMES.get(arch) not in supported:
        import transformers

        raise GGUFConversionError(
            f"{file.name} is a {arch!r} model, an architecture transformers "
            f"{transformers.__version__} cannot de-quantize from GGUF; supported: "
            f"{', '.join(supported)}. Load the model's Hugging Face checkpoint instead.",
            architecture=arch)
    plain = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
    unknown = sorted({t.tensor_type.name for t in reader.tensors
                      if t.tensor_type not in plain and t.tensor_type not in _type_traits})
    if unknown:
        raise GGUFConversionError(
            f"{file.name} ({arch!r}) stores tensors as {', '.join(unknown)}, which the gguf "
            f"package cannot de-quantize; use a file quantized with another type (Q4_K_M, "
            f"Q8_0, ...)", architecture=arch)
    return arch


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _known_hash(file: Path) -> str:
    """The content hash, remembered per (path, size, mtime) so a large file is hashed once."""
    stat = file.stat()
    index = cache_dir() / "gguf" / "hashes.json"
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = file_hash(file)
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        tmp.replace(index)
    return str(known[key])


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def converted_path(path: str | os.PathLike[str], *, target: Path | None = None) -> Path:
    """A folder holding the de-quantized checkpoint of a GGUF file, made on first use.

    ``target`` names the folder (the default model keeps its historical one); by default
    it is ``<cache>/gguf/<file stem>-<content hash>``.
    """
    file = find_gguf(path)
    if target is None:
        target = cache_dir() / "gguf" / f"{file.stem}-{_known_hash(file)[:16]}"
    return cached_folder(target, lambda folder: _convert(file, folder), _is_converted)


def _convert(file: Path, folder: Path) -> None:
    arch = _check_convertible(file)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
    except Exception as exc:  # transformers raises many types here
        raise GGUFConversionError(f"could not convert {file} ({arch!r}): {exc}",
                                  architecture=arch) from exc
    # The weights are already de-quantized; drop the GGUF marker so that transformers
    # agrees to save them as an ordinary checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "gguf_source.json").write_text(json.dumps(
        {"file": file.name, "architecture": arch}, indent=1))
