"""Length-shaping rewards: cosine (Yeo et al. 2025), soft overlong (DAPO), length (Kimi k1.5).

Lengths are in tokens, ``len(completion_ids[i])``, when the trainer passes ``completion_ids``;
otherwise whitespace-separated words (offline scoring of JSONL files).
"""

from __future__ import annotations

import math

from ._common import column, lengths, texts
from .accuracy import accuracy_reward, check_timeouts
from .registry import register_reward


def cosfn(t: float, T: float, eta_min: float, eta_max: float) -> float:
    """``CosFn(t, T, η_min, η_max) = η_min + ½ (η_max − η_min)(1 + cos(tπ/T))``: η_max at
    ``t = 0``, falling along a half cosine to η_min at ``t = T``; ``t`` is clipped to [0, T].

    Source: Yeo et al. (2025), "Demystifying Long Chain-of-Thought Reasoning in LLMs", §4.2, Eq. 1.
    """
    t = min(max(t, 0.0), T)
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(t * math.pi / T))


def check_cosine(*, max_len: int, **limits) -> None:
    """Raises ``ValueError`` unless ``max_len`` > 0 and the math-verify limits are > 0."""
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    check_timeouts(**limits)


@register_reward("cosine", check=check_cosine)
def cosine_reward(
    completions,
    solution=None,
    completion_ids=None,
    *,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    exceed_length_penalty: float | None = None,
    timeout_seconds: float = 5.0,
    batch_timeout_seconds: float = 30.0,
    **kwargs,
) -> list[float | None]:
    """Cosine length-scaled correctness (Yeo et al. 2025, "Demystifying Long Chain-of-Thought
    Reasoning in LLMs", §4.2, Eq. 1), with open-r1's parameter names.

    With L the completion length (clipped to ``max_len``) and :func:`cosfn`:
    correct → ``CosFn(L, max_len, min_value_correct, max_value_correct)`` (short correct answers
    earn most: ``max_value_correct`` at L=0 down to ``min_value_correct`` at ``max_len``);
    wrong → ``CosFn(L, max_len, max_value_wrong, min_value_wrong)`` (short wrong answers are
    punished most: ``min_value_wrong`` at L=0 up to ``max_value_wrong`` at ``max_len``).
    With ``exceed_length_penalty`` set, L ≥ ``max_len`` scores that value instead (the paper's r_e).
    Correctness is :func:`rewards.accuracy_reward` == 1.0.

    Args:
        completions: generated texts.
        solution: gold answers (column).
        completion_ids: token ids per completion (column); lengths fall back to word counts.
        min_value_wrong, max_value_wrong: reward of a wrong answer at length 0 / ``max_len``.
        min_value_correct, max_value_correct: reward of a correct answer at ``max_len`` / length 0.
        max_len: length in tokens (> 0) where the curve ends.
        exceed_length_penalty: optional reward for L ≥ ``max_len`` (paper: r_e).
        timeout_seconds, batch_timeout_seconds: math-verify limits, as in ``accuracy``.
        **kwargs: other columns, ignored.

    Returns:
        Per completion a float, or ``None`` when the gold answer cannot be parsed.

    Raises:
        ValueError: ``max_len`` ≤ 0, or missing/misaligned columns.
    """
    limits = {"timeout_seconds": timeout_seconds, "batch_timeout_seconds": batch_timeout_seconds}
    check_cosine(max_len=max_len, **limits)
    texts_ = texts(completions)
    correct = accuracy_reward(texts_, solution=solution, **limits)
    rewards: list[float | None] = []
    for n, acc in zip(lengths(texts_, completion_ids), correct):
        if acc is None:
            rewards.append(None)
        elif exceed_length_penalty is not None and n >= max_len:
            rewards.append(float(exceed_length_penalty))
        elif acc == 1.0:
            rewards.append(cosfn(n, max_len, min_value_correct, max_value_correct))
        else:
            rewards.append(cosfn(n, max_len, max_value_wrong, min_value_wrong))
    return rewards


def soft_overlong_penalty(length: int, max_completion_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement
    Learning System at Scale", Eq. 13), with L_max = ``max_completion_length``, L_cache =
    ``cache_length`` and |y| = ``length``::

        0                               if |y| ≤ L_max − L_cache
        ((L_max − L_cache) − |y|) / L_cache   if L_max − L_cache < |y| ≤ L_max
        −1                              if |y| > L_max
    """
    threshold = max_completion_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_completion_length:
        return (threshold - length) / cache_length
    return -1.0


def check_soft_overlong(*, max_completion_length: int, cache_length: int | None, **_) -> None:
    """Raises ``ValueError`` unless L_max > 0 and L_cache is ``None`` or in (0, L_max]."""
    if max_completion_length <= 0:
        raise ValueError(f"max_completion_length must be > 0, got {max_completion_length}")
    if cache_length is not None and not 0 < cache_length <= max_completion_length:
        raise ValueError(f"cache_length must be in (0, {max_completion_length}], got {cache_length}")


@register_reward("soft_overlong", check=check_soft_overlong)
def soft_overlong_reward(
    completions, completion_ids=None, *, max_completion_length: int, cache_length: int | None = None, **kwargs
) -> list[float]:
    """DAPO soft overlong punishment (Yu et al. 2025, Eq. 13; see :func:`soft_overlong_penalty`):
    0 up to ``max_completion_length − cache_length`` tokens, then linearly down to −1 at
    ``max_completion_length``, −1 beyond.

    Args:
        completions: generated texts.
        completion_ids: token ids per completion (column); lengths fall back to word counts.
        max_completion_length: L_max in tokens (required; normally the trainer's
            ``max_completion_length``).
        cache_length: L_cache in tokens, 0 < L_cache ≤ L_max; default L_max // 5 (DAPO's
            4096 of 20480).
        **kwargs: other columns, ignored.

    Returns:
        A value in [−1, 0] per completion.

    Raises:
        ValueError: for a non-positive L_max or an L_cache outside (0, L_max].
    """
    check_soft_overlong(max_completion_length=max_completion_length, cache_length=cache_length)
    if cache_length is None:
        cache_length = max(1, max_completion_length // 5)
    return [
        soft_overlong_penalty(n, max_completion_length, cache_length)
        for n in lengths(texts(completions), completion_ids)
    ]


def kimi_length_rewards(group_lengths: list[int], group_correct: list[float | None]) -> list[float | None]:
    """Kimi k1.5 length reward of one group (Kimi Team 2025, "Kimi k1.5: Scaling Reinforcement
    Learning with LLMs", §2.3.3): with min_len/max_len over the group,
    ``λ = 0.5 − (len − min_len) / (max_len − min_len)``; correct → λ, wrong → min(0, λ);
    all lengths equal → 0 for all. ``None`` correctness stays ``None``."""
    lo, hi = min(group_lengths), max(group_lengths)
    out: list[float | None] = []
    for n, acc in zip(group_lengths, group_correct):
        if acc is None:
            out.append(None)
            continue
        lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
        out.append(lam if acc == 1.0 else min(0.0, lam))
    return out


def check_length(*, num_generations: int, **limits) -> None:
    """Raises ``ValueError`` unless G >= 1 and the math-verify limits are > 0."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    check_timeouts(**limits)


@register_reward("length", check=check_length)
def length_reward(
    completions,
    solution=None,
    completion_ids=None,
    *,
    num_generations: int,
    timeout_seconds: float = 5.0,
    batch_timeout_seconds: float = 30.0,
    **kwargs,
) -> list[float | None]:
    """Kimi k1.5 length penalty within each group (Kimi Team 2025, §2.3.3; see
    :func:`kimi_length_rewards`), in [−0.5, 0.5].

    The trainer passes whole groups in order: completions ``[k*G, (k+1)*G)`` answer the same
    prompt, G = ``num_generations``. Correctness is :func:`rewards.accuracy_reward` == 1.0.

    Args:
        completions: generated texts, G consecutive per prompt.
        solution: gold answers (column).
        completion_ids: token ids per completion (column); lengths fall back to word counts.
        num_generations: G, the group size (required).
        timeout_seconds, batch_timeout_seconds: math-verify limits, as in ``accuracy``.
        **kwargs: other columns, ignored.

    Returns:
        Per completion a float, or ``None`` when the gold answer cannot be parsed.

    Raises:
        ValueError: G ≤ 0, or the number of completions is not a multiple of G.
    """
    limits = {"timeout_seconds": timeout_seconds, "batch_timeout_seconds": batch_timeout_seconds}
    check_length(num_generations=num_generations, **limits)
    n = len(completions)
    if n % num_generations:
        raise ValueError(f"length: {n} completions do not form whole groups of num_generations={num_generations}")
    texts_ = texts(completions)
    column("solution", solution, n, required=True)
    lens = lengths(texts_, completion_ids)
    correct = accuracy_reward(texts_, solution=solution, **limits)
    out: list[float | None] = []
    for start in range(0, n, num_generations):
        end = start + num_generations
        out.extend(kimi_length_rewards(lens[start:end], correct[start:end]))
    return out
