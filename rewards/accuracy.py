"""Accuracy reward: is the final answer mathematically equal to the gold answer?"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation

from . import timelimit
from ._common import column, texts
from .extract import extract_answer, extract_gold, normalize_answer, plain_number
from .registry import register_reward

logger = logging.getLogger(__name__)

_MATH = "rewards._math"


def _number(s: str) -> Decimal | None:
    n = plain_number(s)
    if n is None:
        return None
    try:
        return Decimal(n)
    except InvalidOperation:
        return None


def _worker_call(function: str, args: tuple, timeout_seconds: float) -> bool | None:
    """A math-verify call in the helper process; ``None`` on timeout or failure."""
    try:
        return bool(timelimit.call(_MATH, function, args, timeout_seconds))
    except timelimit.VerifierTimeout:
        logger.warning("math-verify %s ran past %.3gs and was stopped", function, timeout_seconds)
    except timelimit.VerifierError as e:
        logger.warning("math-verify %s failed: %s", function, e)
    return None


def prepare_gold(solution, timeout_seconds: float = 5.0) -> tuple[str, Decimal | None] | None:
    """Extract and check a gold answer once (the G completions of a group share it).

    Args:
        solution: one value of the ``solution`` column (see :func:`rewards.extract.extract_gold`).
        timeout_seconds: hard limit, in seconds, for the math-verify parse.

    Returns:
        ``(normalized gold, its Decimal value if a plain number else None)``, or ``None`` when
        the gold is empty or math-verify cannot parse it (or timed out doing so).
    """
    gold = extract_gold(solution) if solution is not None else None
    if gold is None:
        return None
    gold = normalize_answer(gold)
    gold_num = _number(gold)
    if gold_num is None and not _worker_call("gold_parseable", (gold,), timeout_seconds):
        return None
    return gold, gold_num


# Two numbers joined by an arithmetic operator: "-6 + -9", "2 * 4", "3^2", "( -9 / 9 )". A bare
# fraction ("1/2", "-3/4", "\\frac{1}{2}") is a value, not a calculation.
_CALCULATION_RE = re.compile(r"\d\s*(?:[-+*×·÷^/]|\\times|\\cdot|\\div)\s*[-+(]*\s*\d")
_BARE_FRACTION_RE = re.compile(r"[-+]?\d+\s*/\s*\d+")


def unevaluated_arithmetic(answer: str) -> bool:
    """True when ``answer`` is a calculation on numbers rather than its result.

    math-verify evaluates ``-6 + -9`` to ``-15``, so a policy that copies the question into
    ``<answer>`` would be scored correct: a reward hack a 135M model found within 20 GRPO steps.
    When the gold answer is a plain number, such answers score 0.
    """
    answer = answer.strip()
    return not _BARE_FRACTION_RE.fullmatch(answer) and bool(_CALCULATION_RE.search(answer))


def score_answer(answer: str | None, gold: tuple[str, Decimal | None], timeout_seconds: float = 5.0) -> float:
    """Score one extracted answer against a gold answer from :func:`prepare_gold`.

    Plain numbers on both sides (``"1,000"`` vs ``"1000.0"``) are compared exactly in Python;
    anything else goes to math-verify (``parse`` + ``verify``) in a helper process under a hard
    limit of ``timeout_seconds`` (see :mod:`rewards.timelimit`).

    Returns:
        1.0 equal; 0.0 not equal, no answer, or the comparison timed out.
    """
    if answer is None or not answer.strip():
        return 0.0
    gold_text, gold_num = gold
    answer = normalize_answer(answer)
    answer_num = _number(answer)
    if gold_num is not None and answer_num is not None:
        return 1.0 if gold_num == answer_num else 0.0
    if gold_num is not None and unevaluated_arithmetic(answer):
        return 0.0
    return 1.0 if _worker_call("answers_match", (gold_text, answer), timeout_seconds) else 0.0


@register_reward("accuracy")
def accuracy_reward(completions, solution=None, *, timeout_seconds: float = 5.0, **kwargs) -> list[float | None]:
    """Correctness of the final answer, checked with math-verify.

    The answer is taken from the last ``<answer>...</answer>``, else the last ``\\boxed{}``/
    ``\\fbox{}``, else the last number of the completion (see :func:`rewards.extract.extract_answer`).
    The gold answer (``solution`` column) may be a bare value (``"72"``, ``"\\frac{1}{2}"``), a
    GSM8K solution ending in ``#### 72``, or a worked solution with a ``\\boxed{}``.
    Equivalence is math-verify's (fractions, LaTeX, percentages, units, intervals, sets,
    equations); plain numbers on both sides take an exact pure-Python fast path.

    Args:
        completions: generated texts.
        solution: gold answers aligned with ``completions``.
        timeout_seconds: hard limit in seconds for each math-verify call, enforced by killing a
            helper process, so it holds in any thread and any process.
        **kwargs: other columns, ignored.

    Returns:
        Per completion: 1.0 correct, 0.0 wrong (or no answer, or verification timed out),
        ``None`` when the gold answer cannot be parsed.

    Raises:
        ValueError: when ``solution`` is missing or not aligned with ``completions``, or
            ``timeout_seconds`` ≤ 0.
        VerifierStartError: the helper process cannot be started (a setup problem).
    """
    if not timeout_seconds or timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
    texts_ = texts(completions)
    golds = column("solution", solution, len(texts_), required=True)
    gold_cache: dict[str, tuple | None] = {}
    rewards: list[float | None] = []
    for text, raw_gold in zip(texts_, golds):
        key = repr(raw_gold)
        if key not in gold_cache:
            gold_cache[key] = prepare_gold(raw_gold, timeout_seconds)
        gold = gold_cache[key]
        rewards.append(None if gold is None else score_answer(extract_answer(text), gold, timeout_seconds))
    return rewards
