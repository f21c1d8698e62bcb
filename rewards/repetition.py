"""N-gram repetition penalty.

Yeo et al. (2025), "Demystifying Long Chain-of-Thought Reasoning in LLMs", §4.2 (repetition
penalty against reward hacking by repetition); this form is open-r1's
``get_repetition_penalty_reward``.
"""

from __future__ import annotations

from ._common import texts
from .registry import register_reward


def repetition_penalty(text: str, ngram_size: int = 3, max_penalty: float = -1.0) -> float:
    """``(1 − unique_ngrams / total_ngrams) × max_penalty`` over the lower-cased
    whitespace-separated word n-grams of ``text``; 0.0 when it has fewer than ``ngram_size``
    words."""
    words = text.lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = list(zip(*(words[i:] for i in range(ngram_size))))
    return (1.0 - len(set(ngrams)) / len(ngrams)) * max_penalty or 0.0  # no -0.0


def check_repetition(*, ngram_size: int, max_penalty: float, **_) -> None:
    """Raises ``ValueError`` unless ``ngram_size`` >= 1 and ``max_penalty`` <= 0."""
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0 (it is a penalty), got {max_penalty}")


@register_reward("repetition", check=check_repetition)
def repetition_reward(completions, *, ngram_size: int = 3, max_penalty: float = -1.0, **kwargs) -> list[float]:
    """Penalty for repeated word n-grams: ``(1 − unique_ngrams / total_ngrams) × max_penalty``
    (Yeo et al. 2025, §4.2; open-r1's form). 0 for text without repetition, approaching
    ``max_penalty`` for text that repeats one n-gram.

    Words are whitespace-separated and lower-cased, so text without spaces (Chinese, Japanese)
    counts as few words and is barely penalized.

    Args:
        completions: generated texts.
        ngram_size: n, in words (≥ 1).
        max_penalty: the most negative value (≤ 0).
        **kwargs: columns, ignored.

    Returns:
        A value in [max_penalty, 0] per completion.

    Raises:
        ValueError: ``ngram_size`` < 1 or ``max_penalty`` > 0.
    """
    check_repetition(ngram_size=ngram_size, max_penalty=max_penalty)
    return [repetition_penalty(t, ngram_size, max_penalty) for t in texts(completions)]
