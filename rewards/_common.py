"""Small helpers shared by the reward modules (not part of the public API)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """``text`` with unpaired surrogates (which no encoder accepts) replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def as_text(completion: Any) -> str:
    """Return the generated text of one completion.

    The contract is plain strings, but TRL hands conversational datasets' completions over as
    a list of ``{"role": ..., "content": ...}`` messages; those are joined so that a reward does
    not crash on them. ``None`` becomes ``""``; unpaired surrogates become U+FFFD.

    Raises:
        TypeError: for anything else (an int, a dict without ``content`` ...).
    """
    if isinstance(completion, str):
        return _valid_unicode(completion)
    if completion is None:
        return ""
    if isinstance(completion, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in completion):
        return _valid_unicode("".join(str(m["content"] or "") for m in completion))
    raise TypeError(f"a completion must be a string (or a list of chat messages), got {type(completion).__name__}")


def texts(completions: Sequence[Any]) -> list[str]:
    """``as_text`` over a batch."""
    return [as_text(c) for c in completions]


def column(name: str, values: Sequence[Any] | None, n: int, *, required: bool = False) -> list[Any]:
    """Check that a column passed by the trainer is aligned with the completions.

    Args:
        name: the column's name, for error messages.
        values: the column (a list aligned with completions) or ``None`` when absent.
        n: the number of completions.
        required: raise when the column is absent instead of returning ``[None] * n``.

    Returns:
        ``list(values)`` or ``[None] * n`` when absent and not required.

    Raises:
        ValueError: when required and absent, or when its length is not ``n``.
    """
    if values is None:
        if required:
            raise ValueError(f"this reward needs the '{name}' column, which was not passed")
        return [None] * n
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"column '{name}' must be a list aligned with completions, got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"column '{name}' has {len(values)} values but there are {n} completions")
    return list(values)


def lengths(completions: Sequence[str], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    """Length of each completion: ``len(completion_ids[i])`` tokens when the trainer passed token
    ids, else the number of whitespace-separated words of the text (a rough proxy, used when
    scoring JSONL files offline).

    Raises:
        ValueError: when ``completion_ids`` is not aligned with ``completions``.
    """
    n = len(completions)
    if completion_ids is not None:
        ids = column("completion_ids", completion_ids, n)
        return [len(x) if x is not None else len(t.split()) for x, t in zip(ids, completions)]
    return [len(t.split()) for t in completions]
