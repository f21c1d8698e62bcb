"""Cold-start data: a few thousand readable chains of thought for SFT before RL (DeepSeek-R1 stage 1).

DeepSeek-AI 2025, "DeepSeek-R1", §2.3.1: R1-Zero's outputs mixed languages and were hard to read, so R1 first
fine-tunes on a small set of long, readable chains of thought in a fixed output format. Here they come from
GSM8K's worked training solutions, or from any JSONL of (problem, reasoning, answer), rewritten in our format::

    <think>
    reasoning
    </think>
    <answer>
    final answer
    </answer>

GSM8K's calculator annotations (``48/2 = <<48/2=24>>24``) are removed, and rows are kept only when the
reasoning's length (words) is within bounds and its language consistency (``rewards.language``) reaches a
threshold. ``grpo cold_start RECIPE.yaml`` (or flags) writes ``output_dir/data.jsonl`` (atomically) and
``output_dir/stats.json``; the rows are ``{problem, reasoning, answer, completion, solution, source}``, which
``grpo sft`` turns into prompt/completion pairs with the GRPO prompt template.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from grpo.config import help_field as _help
from grpo.config import parse_config
from grpo.io import read_jsonl, write_json, write_jsonl
from rewards.extract import extract_gold

CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


@dataclass
class ColdStartArguments:
    """Where the worked solutions come from and which of them are kept."""

    source_file: str = _help(
        "JSONL of worked solutions: GSM8K rows (question, answer ending in `#### N`) or rows "
        "with separate problem, reasoning and answer columns.",
        default="../shared/data/gsm8k/train.jsonl",
    )
    source_format: str = _help(
        "`gsm8k` (question + worked answer ending in `#### N`) or `columns` "
        "(problem_column, reasoning_column, answer_column).",
        default="gsm8k",
    )
    problem_column: str = _help("Problem column (source_format: columns).", default="problem")
    reasoning_column: str = _help("Reasoning column (source_format: columns).", default="reasoning")
    answer_column: str = _help("Final-answer column (source_format: columns).", default="answer")
    output_dir: str = _help("Folder that receives data.jsonl and stats.json.", default="outputs/cold_start")
    max_rows: int | None = _help("Stop after this many kept rows (None = all).", default=None)
    min_reasoning_words: int = _help("Drop rows whose reasoning has fewer words (whitespace-separated).", default=10)
    max_reasoning_words: int = _help("Drop rows whose reasoning has more words.", default=200)
    target_language: str = _help(
        "Language of the chains of thought (`rewards.language` codes: en, zh, ...).", default="en"
    )
    min_language_consistency: float = _help(
        "Drop rows whose reasoning has a lower share of target-language words.", default=0.95
    )

    def __post_init__(self) -> None:
        if self.source_format not in ("gsm8k", "columns"):
            raise ValueError(f"source_format must be gsm8k or columns, got {self.source_format!r}")
        if self.min_reasoning_words > self.max_reasoning_words:
            raise ValueError(
                f"min_reasoning_words ({self.min_reasoning_words}) > max_reasoning_words ({self.max_reasoning_words})"
            )


COLD_START_CLASSES = (ColdStartArguments,)  # the argument classes of a `grpo cold_start` recipe


def r1_completion(reasoning: str, answer: str) -> str:
    """The R1 output format (DeepSeek-R1 Table 1), matching the strict ``format`` reward."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{answer.strip()}\n</answer>"


def clean_gsm8k_reasoning(text: str) -> str:
    """GSM8K worked solution (without its ``#### N`` line) made readable: ``<<...>>`` calculator annotations
    removed, blank lines and trailing spaces dropped. ``"48/2 = <<48/2=24>>24 clips"`` -> ``"48/2 = 24 clips"``."""
    lines = [re.sub(r"[ \t]+", " ", CALCULATOR_RE.sub("", line)).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def gsm8k_triple(row: dict[str, Any], where: str) -> tuple[str, str, str]:
    """``(problem, reasoning, answer)`` of a GSM8K row. Raises ``ValueError`` naming ``where`` (FILE:LINE)
    when a field is missing or the answer has no ``####``."""
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where}: GSM8K row needs a string {key!r} field")
    try:
        answer = extract_gold(row["answer"], "gsm8k")
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return row["question"].strip(), clean_gsm8k_reasoning(row["answer"].rsplit("####", 1)[0]), answer


def column_triple(row: dict[str, Any], where: str, args: ColdStartArguments) -> tuple[str, str, str]:
    """``(problem, reasoning, answer)`` from the configured columns; ``ValueError`` naming ``where`` if one is missing."""
    values = []
    for column in (args.problem_column, args.reasoning_column, args.answer_column):
        if row.get(column) is None:
            raise ValueError(f"{where}: missing column {column!r}; columns are {sorted(row)}")
        values.append(str(row[column]).strip())
    return values[0], values[1], values[2]


def rejection_reason(reasoning: str, args: ColdStartArguments) -> str | None:
    """Why a chain of thought is left out (``too_short``, ``too_long``, ``language``), or None to keep it."""
    from rewards.language import consistency

    words = len(reasoning.split())
    if words < args.min_reasoning_words:
        return "too_short"
    if words > args.max_reasoning_words:
        return "too_long"
    if consistency(reasoning, args.target_language) < args.min_language_consistency:
        return "language"
    return None


def build_cold_start(rows: Iterable[tuple[str, dict[str, Any]]], args: ColdStartArguments) -> tuple[list[dict], dict]:
    """Turn ``(where, row)`` pairs into cold-start rows and statistics.

    Returns ``(kept, stats)``: kept rows ``{problem, reasoning, answer, completion, solution, source}`` in input
    order (at most ``max_rows``), and ``{"rows_read", "kept", "rejected": {reason: count}}``.
    Raises ``ValueError`` naming the row (``where``) for unreadable input.
    """
    kept, rejected, read = [], {"too_short": 0, "too_long": 0, "language": 0}, 0
    for where, row in rows:
        if args.max_rows is not None and len(kept) >= args.max_rows:
            break
        read += 1
        if args.source_format == "gsm8k":
            problem, reasoning, answer = gsm8k_triple(row, where)
        else:
            problem, reasoning, answer = column_triple(row, where, args)
        reason = rejection_reason(reasoning, args)
        if reason:
            rejected[reason] += 1
            continue
        kept.append(
            {
                "problem": problem,
                "reasoning": reasoning,
                "answer": answer,
                "completion": r1_completion(reasoning, answer),
                "solution": answer,
                "source": os.path.basename(args.source_file),
            }
        )
    return kept, {"rows_read": read, "kept": len(kept), "rejected": rejected}


def run_cold_start(args: ColdStartArguments) -> str:
    """Build ``output_dir/data.jsonl`` and ``output_dir/stats.json`` from ``source_file``; returns the data path."""
    rows = ((f"{args.source_file}:{line}", row) for line, row in read_jsonl(args.source_file))
    kept, stats = build_cold_start(rows, args)
    if not kept:
        raise ValueError(f"{args.source_file}: no row passed the filters ({stats['rejected']})")
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "stats.json"), {**stats, "arguments": asdict(args)})
    path = os.path.join(args.output_dir, "data.jsonl")
    write_jsonl(path, kept)
    return path


def cold_start_main(argv: list[str]) -> int:
    """``grpo cold_start [RECIPE.yaml] [--field value ...]``: prints the statistics and the data path."""
    (args,) = parse_config(argv, COLD_START_CLASSES)
    path = run_cold_start(args)
    with open(os.path.join(args.output_dir, "stats.json")) as f:
        stats = json.load(f)
    print(json.dumps({k: stats[k] for k in ("rows_read", "kept", "rejected")}))
    print(path)
    return 0
