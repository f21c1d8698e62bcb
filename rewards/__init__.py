"""Reward functions for GRPO, in TRL's calling convention.

Every reward is ``f(completions: list[str], **columns) -> list[float | None]``: the trainer
passes the generated texts plus aligned columns (``prompts``, ``completion_ids``,
``truncated``, ``solution``, any dataset column); unknown columns are ignored, and ``None``
means "cannot be verified" (left out of group statistics). Settings (``max_len``,
``strict`` ...) are keyword-only and bound with :func:`get_reward_funcs`::

    from rewards import get_reward_funcs
    funcs = get_reward_funcs(["accuracy", "format", "cosine"], {"cosine": {"max_len": 1024}})

Registered names: ``accuracy``, ``format``, ``tag_count``, ``language_consistency``,
``cosine``, ``soft_overlong``, ``length``, ``repetition``, ``reasoning_gym``.
"""

from .accuracy import accuracy_reward
from .extract import extract_answer, extract_gold
from .format import detect_think_prefill, format_reward, tag_count_reward
from .gym import reasoning_gym_reward
from .language import language_consistency_reward
from .length import cosine_reward, length_reward, soft_overlong_reward
from .registry import REWARDS, get_reward_funcs, register_reward
from .repetition import repetition_reward
from .timelimit import VerifierError, VerifierStartError, VerifierTimeout

__all__ = [
    "REWARDS",
    "register_reward",
    "get_reward_funcs",
    "accuracy_reward",
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
    "VerifierTimeout",
    "VerifierError",
    "VerifierStartError",
]
