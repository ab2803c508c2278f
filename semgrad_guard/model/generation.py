"""The trace of one generation: the exact ids the model saw and produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Generation:
    """One answer with the exact ids behind it.

    ``response_ids`` include the end-of-turn token when generation stopped on it, so a
    teacher-forced pass over ``prompt_ids + response_ids`` sees what generation saw.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str
    stop_reason: Literal["eos", "length", "stop_string"]
    prompt_text: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_ids"] = list(self.prompt_ids)
        d["response_ids"] = list(self.response_ids)
        return d
