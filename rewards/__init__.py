"""Reward functions for GRPO, in TRL's calling convention.

Every reward is ``f(completions: list[str], **columns) -> list[float | None]``: the trainer
passes the generated texts plus aligned columns (``prompts``, ``completion_ids``,
``truncated``, ``solution``, any dataset column); unknown columns are ignored, and ``None``
means "cannot be verified" (left out of group statistics). Settings (``max_len``,
``strict`` ...) are keyword-only, bound and checked by :func:`get_reward_funcs`, which returns
picklable :class:`Reward` objects::

    from rewards import get_reward_funcs
    funcs = get_reward_funcs(["accuracy", "format", "cosine"], {"cosine": {"max_len": 1024}})

Registered names: ``accuracy``, ``format``, ``tag_count``, ``language_consistency``,
``cosine``, ``soft_overlong``, ``length``, ``repetition``, ``reasoning_gym``; a reward outside the
package is named ``"module.path:function"``. This package never imports ``grpo``.
"""

from .accuracy import accuracy_reward, score_answers
from .extract import extract_answer, extract_gold
from .format import detect_think_prefill, format_reward, tag_count_reward
from .gym import reasoning_gym_reward
from .language import language_consistency_reward
from .length import cosine_reward, length_reward, soft_overlong_reward
from .registry import REWARDS, Reward, get_reward_funcs, register_reward, resolve_reward
from .repetition import repetition_reward
from .timelimit import VerifierError, VerifierStartError, VerifierTimeout, count_timeouts

__all__ = [
    "REWARDS",
    "Reward",
    "register_reward",
    "resolve_reward",
    "get_reward_funcs",
    "accuracy_reward",
    "score_answers",
    "format_reward",
    "tag_count_reward",
    "detect_think_prefill",
    "language_consistency_reward",
    "cosine_reward",
    "soft_overlong_reward",
    "length_reward",
    "repetition_reward",
    "reasoning_gym_reward",
    "extract_answer",
    "extract_gold",
    "count_timeouts",
    "VerifierTimeout",
    "VerifierError",
    "VerifierStartError",
]
