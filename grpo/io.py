"""Files written whole or not at all, and JSONL read with file:line errors: the one copy of each."""

from __future__ import annotations

import json
import os
from typing import Any


def write_text(path: str, text: str) -> None:
    """Write ``text`` atomically (a temporary file beside ``path``, then a rename), creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as indented JSON atomically (:func:`write_text`)."""
    write_text(path, json.dumps(value, indent=2))


def write_jsonl(path: str, rows: list[dict]) -> None:
    """Write ``rows`` as JSONL atomically (:func:`write_text`)."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file.

    Raises ``ValueError`` as ``FILE:LINE: invalid JSON (...)`` or ``FILE:LINE: expected a JSON object``,
    ``FileNotFoundError`` / ``UnicodeDecodeError`` from reading.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append((line_no, row))
    return rows
