"""Whether a tokenizer is the model's own.

A wrong tokenizer (a BERT tokenizer on a Llama-family model, a sibling model's
tokenizer) may still produce ids the model's embedding can hold, and then every score
is computed on text the model never saw. Two checks catch it:

- the begin and end ids the model's config and generation config declare must be
  special tokens of the tokenizer (:func:`check_special_tokens`);
- a model profile records the fingerprint of the tokenizer it was calibrated with
  (:func:`tokenizer_fingerprint`), and a scorer using the profile compares it with its own
  (:func:`check_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import TokenizerMismatchError

_SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


def special_ids(tokenizer: Any) -> set[int]:
    """Every id the tokenizer treats as a special token."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) if i is not None}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, token in added.items() if getattr(token, "special", False))
    return ids


def check_special_tokens(model: Any, tokenizer: Any) -> None:
    """Raise :class:`TokenizerMismatchError` when a begin or end id the model declares is
    not a special token of ``tokenizer``, naming each id and what the tokenizer has there."""
    declared: dict[int, list[str]] = {}
    for owner_name in ("config", "generation_config"):
        owner = getattr(model, owner_name, None)
        for role in ("bos_token_id", "eos_token_id"):
            for token_id in _ids(getattr(owner, role, None)):
                declared.setdefault(token_id, []).append(f"{owner_name}.{role}")
    if not declared:
        return
    special = special_ids(tokenizer)
    size = len(tokenizer)
    problems = []
    for token_id, where in sorted(declared.items()):
        if token_id in special:
            continue
        if token_id < 0 or token_id >= size:
            found = f"outside its {size} tokens"
        else:
            found = f"{tokenizer.convert_ids_to_tokens(token_id)!r}, not a special token"
        problems.append(f"id {token_id} ({', '.join(where)}) is {found}")
    if problems:
        raise TokenizerMismatchError(
            f"mismatched tokenizer: it is not this model's; in the tokenizer "
            f"{'; '.join(problems)} (special tokens of the tokenizer: "
            f"{_special_summary(tokenizer)})")


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What identifies a tokenizer's vocabulary: its size, its named special tokens with
    their ids, and a hash of every (token, id) pair."""
    vocab = sorted((str(token), int(i)) for token, i in tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"size": len(tokenizer), "special": _named_specials(tokenizer), "vocabulary": digest}


def check_fingerprint(recorded: dict[str, Any], tokenizer: Any, source: str) -> None:
    """Raise :class:`TokenizerMismatchError` when ``tokenizer`` is not the one whose
    fingerprint ``source`` (a model profile) recorded, naming what differs."""
    if not recorded:
        return
    own = tokenizer_fingerprint(tokenizer)
    if own == recorded:
        return
    differences = []
    if own.get("size") != recorded.get("size"):
        differences.append(f"{own.get('size')} tokens, the profile's {recorded.get('size')}")
    mine, theirs = own.get("special", {}), recorded.get("special", {})
    for role in sorted(set(mine) | set(theirs)):
        if mine.get(role) != theirs.get(role):
            differences.append(f"{role} {_show(mine.get(role))}, the profile's "
                               f"{_show(theirs.get(role))}")
    if not differences:
        differences.append(f"same size and special tokens, but the vocabulary differs "
                           f"(hash {own['vocabulary']}, the profile's "
                           f"{recorded.get('vocabulary')})")
    raise TokenizerMismatchError(
        f"mismatched tokenizer: {source} was calibrated with another tokenizer: "
        f"{'; '.join(differences)}")


def _named_specials(tokenizer: Any) -> dict[str, list[Any]]:
    named = {}
    for role in _SPECIAL_ROLES:
        token = getattr(tokenizer, role, None)
        if token is not None:
            named[role] = [str(token), int(tokenizer.convert_tokens_to_ids(str(token)))]
    return named


def _special_summary(tokenizer: Any) -> str:
    named = _named_specials(tokenizer)
    return ", ".join(f"{role} {_show(value)}" for role, value in named.items()) or "none named"


def _show(value: Any) -> str:
    if not value:
        return "none"
    token, token_id = value
    return f"{token!r} (id {token_id})"
