"""math-verify glue that runs *inside* the helper process of :mod:`rewards.timelimit`.

Only strings and booleans cross the process boundary; parsed SymPy objects stay here (parsed
gold answers are cached, since the G completions of a group share one gold).
"""

from __future__ import annotations

import functools
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, MatrixBase

_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())
_COMMAND_RE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}|\\[A-Za-z]+")
# Two words in a row, or one word of 4+ letters, outside LaTeX commands: prose, not math.
_PROSE_RE = re.compile(r"[A-Za-z]{4,}|[A-Za-z]{2,}\s+[A-Za-z]{2,}")


def _parse(text: str) -> list:
    # parsing_timeout=None: no signal.alarm; the parent process enforces the time limit.
    return parse(text, extraction_config=_CONFIG, parsing_timeout=None)


def _has_math(parsed: list) -> bool:
    return any(isinstance(p, (Basic, MatrixBase)) for p in parsed)


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> tuple:
    """Parse an extracted answer string with math-verify.

    The answer is first wrapped as ``\\boxed{answer}`` so that LaTeX objects (intervals, sets,
    equations, percentages) are read whole, then as they are. Answers that read like prose
    ("the answer is 5") are only given as they are, letting math-verify's own anchors find
    the value (wrapped, prose would parse as a product of one-letter symbols).

    Returns:
        math-verify's parse result as a tuple; empty when nothing mathematical was found.
    """
    prose = _PROSE_RE.search(_COMMAND_RE.sub(" ", answer)) is not None
    # Prose wrapped in \boxed{} would parse as a product of one-letter symbols: never do that.
    attempts = [answer] if prose else [f"\\boxed{{{answer}}}", answer]
    for text in attempts:
        parsed = _parse(text)
        if _has_math(parsed):
            return tuple(parsed)
    return ()


def gold_parseable(gold: str) -> bool:
    """True when math-verify reads a mathematical object in the gold answer."""
    return bool(parse_answer(gold))


def answers_match(gold: str, pred: str) -> bool:
    """math-verify equivalence of two extracted answers (gold first: ``verify`` is not
    symmetric). False when either side has nothing mathematical."""
    g = parse_answer(gold)
    p = parse_answer(pred)
    if not g or not p:
        return False
    return bool(verify(list(g), list(p), timeout_seconds=None))
