"""Local models named by a string, loaded once per process and shared while in use.

``ChatSemGrad(model="path/or/hub-id")`` and a deserialised ``ChatSemGrad`` find their
model here: a name already loaded (or handed to a ``ChatSemGrad`` as a ``LocalModel``)
is reused, not loaded again; a model nothing uses any more is freed as usual. The
default model answers to its name, ``SmolLM2-135M-Instruct``.

>>> from semgrad_guard import LocalModel
>>> lm = shared_model("SmolLM2-135M-Instruct")
>>> shared_model(lm) is lm is shared_model("SmolLM2-135M-Instruct")
True
"""

from __future__ import annotations

import weakref

from semgrad_guard import LocalModel
from semgrad_guard.model import DEFAULT_MODEL_NAME

_LOADED: weakref.WeakValueDictionary[str, LocalModel] = weakref.WeakValueDictionary()


def shared_model(model: LocalModel | str | None = None) -> LocalModel:
    """The ``LocalModel`` for ``model``: itself (remembered under its name), the one
    already loaded under that name, or a new load (``None``: the default model)."""
    if isinstance(model, LocalModel):
        _LOADED.setdefault(model.name, model)
        return model
    name = DEFAULT_MODEL_NAME if model is None else str(model)
    loaded = _LOADED.get(name)
    if loaded is None:
        loaded = LocalModel.load(None if name == DEFAULT_MODEL_NAME else name)
        _LOADED[name] = loaded
    return loaded
