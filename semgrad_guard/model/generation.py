"""The trace of one generation: the exact ids the model saw and produced."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal


class PrefixCache:
    """The keys and values generation computed for the prompt, handed out once.

    Scoring reuses them instead of recomputing the prompt; a second score of the same
    generation recomputes (the cache is extended in place by the first one).
    """

    def __init__(self, cache: Any, length: int) -> None:
        self._cache: Any = cache
        self.length = length
        self._lock = threading.Lock()

    def take(self) -> Any:
        with self._lock:
            cache, self._cache = self._cache, None
            return cache


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
    prefix_cache: PrefixCache | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_ids": list(self.prompt_ids), "response_ids": list(self.response_ids),
                "text": self.text, "stop_reason": self.stop_reason,
                "prompt_text": self.prompt_text, "seconds": self.seconds}
