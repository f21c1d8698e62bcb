"""The reward registry: ``@register_reward`` and ``get_reward_funcs``.

Every reward follows TRL's calling convention ``f(completions, **columns) -> list[float | None]``.
Its *settings* (``max_len``, ``strict`` ...) are keyword-only parameters; its *columns*
(``solution``, ``completion_ids`` ...) are ordinary parameters filled by the trainer.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RewardFunc = Callable[..., list]

REWARDS: dict[str, RewardFunc] = {}
"""Registered rewards, by name. Filled at import of :mod:`rewards`."""


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator adding a reward function to :data:`REWARDS` under ``name``.

    Args:
        name: the registered name (the trainer logs ``rewards/<name>``).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: if ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward name must be a non-empty string, got {name!r}")

    def decorator(func: RewardFunc) -> RewardFunc:
        if name in REWARDS:
            raise ValueError(f"a reward named '{name}' is already registered ({REWARDS[name].__module__})")
        REWARDS[name] = func
        return func

    return decorator


def reward_settings(func: RewardFunc) -> dict[str, inspect.Parameter]:
    """The settings of a reward: its keyword-only parameters, by name."""
    params = inspect.signature(func).parameters
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _bind(name: str, func: RewardFunc, settings: dict[str, Any]) -> RewardFunc:
    """Wrap ``func`` with its settings bound; the wrapper is named ``name``."""
    setting_names = frozenset(reward_settings(func))

    @functools.wraps(func)
    def reward(completions, **columns):
        # A dataset column that happens to share a setting's name must not override the setting.
        cols = {k: v for k, v in columns.items() if k not in setting_names}
        return func(completions, **cols, **settings)

    reward.__name__ = name
    reward.__qualname__ = name
    reward.reward_kwargs = dict(settings)  # type: ignore[attr-defined]
    return reward


def get_reward_funcs(names: Sequence[str], kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> list[RewardFunc]:
    """Build the named rewards, in order, with their settings bound.

    Args:
        names: registered reward names, e.g. ``["accuracy", "format"]``.
        kwargs: optional settings per reward name, e.g. ``{"cosine": {"max_len": 1024}}``.

    Returns:
        One callable per name, each with ``__name__`` equal to its registered name, taking
        ``(completions, **columns)`` and returning ``list[float | None]``.

    Raises:
        TypeError: if ``names`` is a single string rather than a list.
        ValueError: for an unknown or repeated name, settings given for a name not in
            ``names``, an unknown setting for a reward, or a required setting left out
            (e.g. ``length`` without ``num_generations``).
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of reward names, e.g. ['accuracy', 'format'], not a string")
    kwargs = dict(kwargs or {})
    available = ", ".join(sorted(REWARDS))
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; available: {available}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"reward(s) {repeated} listed more than once")
    stray = [k for k in kwargs if k not in names]
    if stray:
        raise ValueError(f"reward kwargs given for {stray}, which are not among the chosen rewards {list(names)}")

    funcs = []
    for name in names:
        func = REWARDS[name]
        settings = dict(kwargs.get(name) or {})
        allowed = reward_settings(func)
        bad = [k for k in settings if k not in allowed]
        if bad:
            raise ValueError(f"reward '{name}' has no setting(s) {bad}; its settings are: {sorted(allowed) or 'none'}")
        missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in settings]
        if missing:
            raise ValueError(f"reward '{name}' needs the setting(s) {missing} (pass them in reward kwargs)")
        funcs.append(_bind(name, func, settings))
    return funcs
