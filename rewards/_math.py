"""math-verify glue that runs *inside* the helper processes of :mod:`rewards.timelimit`.

Only strings and booleans cross the process boundary; parsed SymPy objects stay here (parsed answers
are cached, since the G completions of a group share one gold and often one answer).
"""

from __future__ import annotations

import functools
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, MatrixBase

_LATEX = (LatexExtractionConfig(boxed_match_priority=0),)
_EXPR = (ExprExtractionConfig(),)
_PYTHON_STYLE_RE = re.compile(r"\*\*|\b(?:sqrt|exp|log|sin|cos|tan|pi)\(")


def _parse(text: str, config) -> list:
    # parsing_timeout=None: no signal.alarm from math-verify; the helper's own alarm and the parent's
    # kill bound the time.
    return parse(text, extraction_config=config, parsing_timeout=None)


def _has_math(parsed: list) -> bool:
    return any(isinstance(p, (Basic, MatrixBase)) for p in parsed)


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> tuple:
    """Parse one extracted, normalized answer with math-verify.

    The answer is read whole, as the content of ``\\boxed{answer}`` (LaTeX extraction only, so that a
    number is never picked out of a larger object such as a matrix or ``-[0,1)``). A plain-text answer
    in Python style (``sqrt(2)/2``, ``2**10``) is read by the expression extractor first.

    Returns:
        math-verify's parse result as a tuple; empty when nothing mathematical was found.
    """
    attempts = [(f"\\boxed{{{answer}}}", _LATEX)]
    if "\\" not in answer and _PYTHON_STYLE_RE.search(answer):
        attempts.insert(0, (answer, _EXPR))
    for text, config in attempts:
        parsed = _parse(text, config)
        if _has_math(parsed):
            return tuple(parsed)
    return ()


def judge(gold: str, answer: str | None) -> bool | None:
    """math-verify's verdict on ``answer`` against ``gold`` (``verify(gold, answer)``: not symmetric).

    Returns:
        ``None`` when the gold has nothing mathematical (it cannot be scored); ``False`` when the
        answer has nothing mathematical, or ``answer`` is ``None`` (a check of the gold alone);
        else the verdict.
    """
    g = parse_answer(gold)
    if not g:
        return None
    if answer is None:
        return False
    p = parse_answer(answer)
    if not p:
        return False
    return bool(verify(list(g), list(p), timeout_seconds=None))
