"""reasoning-gym scoring that runs *inside* the helper process of :mod:`rewards.timelimit`
(several of its verifiers evaluate expressions with SymPy, which can hang on hostile input)."""

from __future__ import annotations

import functools

import reasoning_gym
from reasoning_gym.factory import DATASETS


@functools.cache
def _score_fn(name: str):
    return reasoning_gym.get_score_answer_fn(name)


def score(name: str, answer: str, entry: dict) -> float | None:
    """reasoning-gym's own score for ``answer`` on ``entry``; ``None`` when ``name`` is not a
    registered reasoning-gym dataset."""
    if name not in DATASETS:
        return None
    return float(_score_fn(name)(answer, entry))
