"""Accuracy reward: is the final answer mathematically equal to the gold answer?"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from . import timelimit
from ._common import column, texts
from .equivalence import Answer, has_relation, quick_verdict, read
from .extract import extract_answer, extract_gold
from .registry import register_reward

logger = logging.getLogger(__name__)

_MATH = "rewards._math"
CACHE_SIZE = 50_000
"""Verdicts of (gold, answer) pairs kept between calls (a verdict never changes; timeouts are not kept)."""
_verdicts: OrderedDict[tuple[str, str | None], bool | None] = OrderedDict()
_verdicts_lock = threading.Lock()


def check_timeouts(*, timeout_seconds: float, batch_timeout_seconds: float, **_) -> None:
    """Raises ``ValueError`` unless both limits are > 0 seconds."""
    for name, value in (("timeout_seconds", timeout_seconds), ("batch_timeout_seconds", batch_timeout_seconds)):
        if not value or value <= 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")


def clear_cache() -> None:
    """Forget the cached verdicts (for benchmarks)."""
    with _verdicts_lock:
        _verdicts.clear()


def _cached(key: tuple[str, str | None]) -> tuple[bool, bool | None]:
    with _verdicts_lock:
        if key in _verdicts:
            _verdicts.move_to_end(key)
            return True, _verdicts[key]
    return False, None


def _remember(key: tuple[str, str | None], verdict: bool | None) -> None:
    with _verdicts_lock:
        _verdicts[key] = verdict
        if len(_verdicts) > CACHE_SIZE:
            _verdicts.popitem(last=False)


def read_gold(solution) -> Answer | None:
    """The gold answer of one ``solution`` value, read (see :mod:`rewards.equivalence`); ``None`` when
    it is empty, prose or too large to evaluate (the completions of that row score ``None``)."""
    gold = extract_gold(solution)
    if gold is None:
        return None
    answer = read(gold)
    return None if answer.kind in ("prose", "refused") else answer


def _first_pass(extracted: str | None, gold: Answer) -> tuple[float | None, str | None]:
    """``(verdict, None)`` when decided in Python, else ``(None, normalized answer)`` for math-verify."""
    if extracted is None or not extracted.strip():
        return 0.0, None
    answer = read(extracted, gold_has_relation=has_relation(gold.raw))
    verdict = quick_verdict(answer, gold)
    return (verdict, None) if verdict is not None else (None, answer.raw)


def score_batch(
    answers: Sequence[str | None], golds: Sequence[Answer | None], timeout_seconds: float, batch_timeout_seconds: float
) -> list[float | None]:
    """Score extracted answers against read golds: the equivalence layer in Python, then the
    undecided (gold, answer) pairs, deduplicated and minus cached verdicts, in one bounded
    :func:`rewards.timelimit.run_batch` (a timed-out or failed pair scores 0.0 and is not cached). A
    gold that math-verify cannot parse scores ``None``. Never raises on content."""
    out: list[float | None] = [None] * len(answers)
    pairs: dict[tuple[str, str | None], list[int]] = {}
    math_golds: dict[str, list[int]] = {}
    for i, (extracted, gold) in enumerate(zip(answers, golds)):
        if gold is None:
            continue
        if gold.kind == "math":
            math_golds.setdefault(gold.raw, []).append(i)
        try:
            out[i], answer = _first_pass(extracted, gold)
        except Exception:  # noqa: BLE001 - a completion must never crash training
            logger.exception("accuracy: cannot read answer %d; scored 0", i)
            out[i], answer = 0.0, None
        if answer is not None:
            pairs.setdefault((gold.raw, answer), []).append(i)
    for g in math_golds:  # every math gold is checked once, so that an unparseable one scores None
        if not any(key[0] == g for key in pairs):
            pairs[(g, None)] = []
    verdicts: dict[tuple[str, str | None], bool | None] = {}
    for key in pairs:
        hit, verdict = _cached(key)
        if hit:
            verdicts[key] = verdict
    todo = [key for key in pairs if key not in verdicts]
    outcomes = timelimit.run_batch(
        _MATH, "judge", todo, timeout_s=timeout_seconds, batch_timeout_s=batch_timeout_seconds
    )
    failed = 0
    for key, (status, value) in zip(todo, outcomes):
        if status == "ok":
            verdicts[key] = value
            _remember(key, value)
        else:
            failed += 1
            verdicts[key] = False
    if failed:
        logger.warning("accuracy: %d of %d math-verify calls timed out or failed; scored 0", failed, len(todo))
    for key, indices in pairs.items():
        for i in indices:
            out[i] = None if verdicts[key] is None else float(verdicts[key])
    unparseable = {g for (g, _), v in verdicts.items() if v is None}
    for g in unparseable:
        for i in math_golds[g]:
            out[i] = None
    return out


@register_reward("accuracy", check=check_timeouts)
def accuracy_reward(
    completions, solution=None, *, timeout_seconds: float = 5.0, batch_timeout_seconds: float = 30.0, **kwargs
) -> list[float | None]:
    """Correctness of the final answer: 1.0 when it equals the gold answer, checked in Python and with
    math-verify.

    Extraction (:func:`rewards.extract.extract_answer`): the last ``<answer>...</answer>``, else the
    final ``\\boxed{}`` (boxes joined by commas or "and" form one multi-part answer: ``\\boxed{2} and
    \\boxed{3}`` is the list 2, 3), else the final math span or standalone number (never a number out of
    a LaTeX expression). The gold answer (``solution`` column, see :func:`rewards.extract.extract_gold`)
    may be a bare value, a GSM8K solution ending in ``#### 72``, or a worked solution whose boxes are
    all taken. Equivalence (:mod:`rewards.equivalence`): numbers exactly in Python (thousands
    separators, scientific notation), short text answers case-insensitively, everything else by
    math-verify (fractions, LaTeX, percentages, units, intervals, sets, matrices, equations). An
    unevaluated calculation against a number gold scores 0, and so do answers too large to evaluate.

    Args:
        completions: generated texts.
        solution: gold answers aligned with ``completions``.
        timeout_seconds: limit in seconds for each math-verify call (its helper's alarm, then a kill).
        batch_timeout_seconds: limit in seconds for all the math-verify calls of this batch, from the
            moment the first helper process is ready; calls not finished by then score 0.0 and count
            as timeouts (see :func:`rewards.timelimit.count_timeouts`).
        **kwargs: other columns, ignored.

    Returns:
        Per completion: 1.0 correct, 0.0 wrong (or no answer, or not verified in time), ``None`` when
        the gold answer cannot be scored (empty, prose, or nothing math-verify can parse).

    Raises:
        ValueError: when ``solution`` is missing or not aligned with ``completions``, or a limit ≤ 0.
        VerifierStartError: the helper process cannot be started (a setup problem).
    """
    check_timeouts(timeout_seconds=timeout_seconds, batch_timeout_seconds=batch_timeout_seconds)
    texts_ = texts(completions)
    golds = read_golds(column("solution", solution, len(texts_), required=True))
    extracted: dict[str, str | None] = {}  # the G completions of a group are often the same text
    for i, text in enumerate(texts_):
        if text not in extracted:
            try:
                extracted[text] = extract_answer(text)
            except Exception:  # noqa: BLE001 - a completion must never crash training
                logger.exception("accuracy: cannot extract the answer of completion %d; scored 0", i)
                extracted[text] = None
    answers = [extracted[text] for text in texts_]
    return score_batch(answers, golds, timeout_seconds, batch_timeout_seconds)


def read_golds(solutions: Sequence) -> list[Answer | None]:
    """:func:`read_gold` over a column, each distinct value read once; a value that cannot be read
    (it raised) is ``None``."""
    done: dict[str, Answer | None] = {}
    out = []
    for raw in solutions:
        key = repr(raw)
        if key not in done:
            try:
                done[key] = read_gold(raw)
            except Exception:  # noqa: BLE001 - a bad gold scores None, it does not stop training
                logger.exception("accuracy: cannot read gold answer %s; scored None", key[:200])
                done[key] = None
        out.append(done[key])
    return out


def score_answers(
    answers: Sequence[str | None],
    golds: Sequence,
    *,
    timeout_seconds: float = 5.0,
    batch_timeout_seconds: float = 30.0,
) -> list[float | None]:
    """The accuracy verdicts of already extracted answers (``None``: no answer) against gold answers in
    any form :func:`rewards.extract.extract_gold` reads, aligned; as :func:`accuracy_reward` after its
    extraction step. ``score_answers([None], [gold]) == [None]`` tells that ``gold`` cannot be scored."""
    check_timeouts(timeout_seconds=timeout_seconds, batch_timeout_seconds=batch_timeout_seconds)
    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} answers but {len(golds)} gold answers")
    return score_batch(list(answers), read_golds(golds), timeout_seconds, batch_timeout_seconds)
