"""Model profiles: the calibrated anchor of one model and prompt format, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ProfileVersionError
from ..paths import cache_dir
from .learned import LearnedScore

#: The profile format this library writes. Version 1 (no ``version`` key) held the anchor
#: alone; version 2 adds the supervised calibration (``learned``, ``semgrad_selection``).
PROFILE_VERSION = 2
_READABLE_VERSIONS = (1, 2)


def model_fingerprint(model: Any) -> str:
    """A stable id of a model's architecture and weights.

    Hashing every weight of a 8B model would take a minute, so this hashes the config,
    every parameter's name, shape and dtype, and the first and last 64 values of each.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict()
        for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype",
                         "_attn_implementation_autoset", "_commit_hash"):
            cfg.pop(volatile, None)
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:64], flat[-64:]]).float().cpu()
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ModelProfile:
    """Where SemGrad takes its gradients for one model and prompt format.

    ``anchor_offset`` is negative, counted back from the end of the prompt (-1 is the
    last prompt token); ``layers`` use Hugging Face ``hidden_states`` numbering.
    ``sps`` maps ``"offset,layer"`` to the Semantic Preservation Score of that
    candidate (method.md, SPS). ``tokenizer_fingerprint`` identifies the tokenizer it was
    calibrated with; a scorer using the profile with another tokenizer refuses it
    (profiles made before it was recorded carry none and are not checked).

    A profile fitted on labelled answers (``semgrad-guard calibrate --labelled``) also
    carries ``learned``, the learned probability of error
    (:class:`~semgrad_guard.scoring.learned.LearnedScore`: its features, transforms,
    standardisation, coefficients, ``C``, Platt map, fallback, out-of-domain detector,
    cross-validated AUROC per domain, number of answers, judge, data fingerprint and
    domains), and ``semgrad_selection``, the best single SemGrad configuration by
    cross-validated AUROC beside the SPS choice. ``version`` is the file format;
    :meth:`from_json` reads versions 1 and 2 and refuses others with
    :class:`~semgrad_guard.errors.ProfileVersionError`.
    """

    model_name: str
    model_fingerprint: str
    template_fingerprint: str
    anchor_offset: int
    layers: tuple[int, ...]
    anchor_token: str = ""
    layer_rule: str = "upper-half"
    sps: dict[str, float] = field(default_factory=dict)
    fixed_suffix_length: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""
    tokenizer_fingerprint: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    version: int = PROFILE_VERSION
    learned: LearnedScore | None = None
    semgrad_selection: dict[str, Any] = field(default_factory=dict)

    @property
    def profile_id(self) -> str:
        return f"{self.model_fingerprint}-{self.template_fingerprint}"

    def sps_at(self, offset: int, layer: int) -> float | None:
        return self.sps.get(f"{offset},{layer}")

    def to_json(self) -> str:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["learned"] = None if self.learned is None else self.learned.to_dict()
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> ModelProfile:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not a JSON model profile: {exc}") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: not a JSON model profile (a {type(d).__name__})")
        version = d.setdefault("version", 1)
        if version not in _READABLE_VERSIONS:
            raise ProfileVersionError(
                f"{source}: model profile format version {version!r}; this library reads "
                f"versions {', '.join(map(str, _READABLE_VERSIONS))} (upgrade semgrad-guard, "
                f"or calibrate the model again)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown profile keys {unknown}; allowed: {sorted(known)}")
        d["layers"] = tuple(int(x) for x in d["layers"])
        if d.get("learned") is not None:
            try:
                d["learned"] = LearnedScore.from_dict(d["learned"])
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        offset = int(d["anchor_offset"])
        if offset >= 0:
            raise ConfigError(f"{source}: anchor_offset must be negative, got {offset}")
        return cls(**d)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profile-")
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelProfile:
        return cls.from_json(Path(path).read_text(), source=str(path))


#: Profiles calibrated by the project and shipped with the package (the default model's).
BUILTIN_PROFILES = Path(__file__).parent / "profiles"


class ProfileStore:
    """Profiles cached by model and template fingerprint (``<cache>/profiles``).

    A profile the user calibrated wins; otherwise the profiles shipped with the package
    (the default model's, calibrated with ``semgrad-guard calibrate``) are used, so the
    default model scores with the same anchor on every machine.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 builtin: bool = True) -> None:
        self.root = Path(root) if root else cache_dir() / "profiles"
        self.builtin = builtin

    def path_for(self, model_fp: str, template_fp: str) -> Path:
        return self.root / f"{model_fp}-{template_fp}.json"

    def find(self, model_fp: str, template_fp: str) -> ModelProfile | None:
        folders = (self.root, BUILTIN_PROFILES) if self.builtin else (self.root,)
        for folder in folders:
            path = folder / self.path_for(model_fp, template_fp).name
            if path.is_file():
                return ModelProfile.load(path)
        return None

    def save(self, profile: ModelProfile) -> Path:
        return profile.save(self.path_for(profile.model_fingerprint, profile.template_fingerprint))

    def __iter__(self) -> Iterator[ModelProfile]:
        for path in sorted(self.root.glob("*.json")):
            yield ModelProfile.load(path)
