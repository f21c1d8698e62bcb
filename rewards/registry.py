"""The reward registry: ``@register_reward``, rewards by import path, and ``get_reward_funcs``.

Every reward follows TRL's calling convention ``f(completions, **columns) -> list[float | None]``.
Its *settings* (``max_len``, ``strict`` ...) are keyword-only parameters; its *columns*
(``solution``, ``completion_ids`` ...) are ordinary parameters filled by the trainer.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RewardFunc = Callable[..., list]

REWARDS: dict[str, RewardFunc] = {}
"""Registered rewards, by name. Filled at import of :mod:`rewards`."""
CHECKS: dict[str, Callable[..., None]] = {}
"""Per registered reward, the function that checks its settings' values (raises ``ValueError``)."""


def register_reward(name: str, check: Callable[..., None] | None = None) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator adding a reward function to :data:`REWARDS` under ``name``.

    Args:
        name: the registered name (the trainer logs ``rewards/<name>``).
        check: optional ``check(**settings)`` raising ``ValueError`` for bad setting values; it gets
            every setting (defaults filled in) when :func:`get_reward_funcs` builds the reward.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: if ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a reward name must be a non-empty string without ':', got {name!r}")

    def decorator(func: RewardFunc) -> RewardFunc:
        if name in REWARDS:
            raise ValueError(f"a reward named '{name}' is already registered ({REWARDS[name].__module__})")
        REWARDS[name] = func
        if check is not None:
            CHECKS[name] = check
        return func

    return decorator


def reward_settings(func: RewardFunc) -> dict[str, inspect.Parameter]:
    """The settings of a reward: its keyword-only parameters, by name (none when it has no signature)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def resolve_reward(entry: str) -> tuple[str, RewardFunc]:
    """``(name, function)`` of a ``reward_funcs`` entry: a registered name (``"accuracy"``), or
    ``"module.path:function"`` for a reward outside the package (imported; its name is ``function``).

    Raises:
        ValueError: one line naming the entry: unknown name, module that fails to import, missing
            attribute, or an object that is not callable.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"a reward entry must be a name or 'module:function', got {entry!r}")
    if ":" not in entry:
        if entry not in REWARDS:
            raise ValueError(
                f"unknown reward {entry!r}; available: {', '.join(sorted(REWARDS))} (or 'module.path:function')"
            )
        return entry, REWARDS[entry]
    module_name, _, attr = entry.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the entry's problem
        raise ValueError(f"reward {entry!r}: cannot import module {module_name!r} ({_one_line(e)})") from None
    for part in attr.split("."):
        if not part or not hasattr(obj, part):
            raise ValueError(f"reward {entry!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"reward {entry!r}: {module_name}.{attr} is a {type(obj).__name__}, not callable")
    return attr.rsplit(".", 1)[-1], obj


class Reward:
    """A reward with its settings bound: ``Reward(name, func, settings)(completions, **columns)`` calls
    ``func(completions, **columns, **settings)``. Picklable (``func`` is pickled by reference), so it
    can go to a spawned worker process; ``__name__`` is the name it is logged under."""

    def __init__(self, name: str, func: RewardFunc, settings: Mapping[str, Any]) -> None:
        self.__name__ = name
        self.__qualname__ = name
        self.func = func
        self.reward_kwargs = dict(settings)
        self.setting_names = frozenset(reward_settings(func))

    def __call__(self, completions, **columns) -> list:
        # A dataset column that happens to share a setting's name must not override the setting.
        cols = {k: v for k, v in columns.items() if k not in self.setting_names}
        return self.func(completions, **cols, **self.reward_kwargs)

    def __repr__(self) -> str:
        return f"Reward({self.__name__!r}, {getattr(self.func, '__module__', '?')}, {self.reward_kwargs!r})"


def _allowed_types(annotation: Any) -> tuple[type, ...] | None:
    """The plain types an annotation allows (``float | None`` gives ``(float, NoneType)``); ``None`` when
    it is not made of plain types (then the value is not checked)."""
    if annotation in (inspect.Parameter.empty, Any):
        return None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [_allowed_types(a) for a in typing.get_args(annotation)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)  # type: ignore[union-attr]
    if annotation is None or annotation is type(None):
        return (type(None),)
    return (annotation,) if annotation in (int, float, bool, str) else None


def _check_types(name: str, func: RewardFunc, settings: Mapping[str, Any]) -> None:
    try:
        params = inspect.signature(func, eval_str=True).parameters
    except Exception:  # noqa: BLE001 - unresolvable annotations: leave the values to the reward
        return
    for key, value in settings.items():
        allowed = _allowed_types(params[key].annotation) if key in params else None
        if allowed is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        ok = ok or (float in allowed and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"reward '{name}': setting {key} must be {wanted}, got {value!r}")


def build_reward(entry: str, settings: Mapping[str, Any] | None = None) -> Reward:
    """One :class:`Reward` from a ``reward_funcs`` entry and its settings, every setting checked now
    (names, required ones, types from the annotations, values by the reward's ``check``).

    Raises:
        ValueError: one line naming the reward and the setting.
    """
    name, func = resolve_reward(entry)
    if settings is not None and not isinstance(settings, Mapping):
        raise ValueError(f"reward kwargs for '{entry}' must be a mapping of settings, got {settings!r}")
    settings = dict(settings or {})
    allowed = reward_settings(func)
    bad = [k for k in settings if k not in allowed]
    if bad:
        raise ValueError(f"reward '{name}' has no setting(s) {bad}; its settings are: {sorted(allowed) or 'none'}")
    missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in settings]
    if missing:
        raise ValueError(f"reward '{name}' needs the setting(s) {missing} (pass them in reward kwargs)")
    _check_types(name, func, settings)
    if entry in CHECKS:
        full = {k: p.default for k, p in allowed.items() if p.default is not inspect.Parameter.empty} | settings
        try:
            CHECKS[entry](**full)
        except ValueError as e:
            raise ValueError(f"reward '{name}': {e}") from None
    return Reward(name, func, settings)


def get_reward_funcs(names: Sequence[str], kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> list[Reward]:
    """Build the named rewards, in order, with their settings bound and checked.

    Args:
        names: ``reward_funcs`` entries: registered names (``["accuracy", "format"]``) or
            ``"module.path:function"`` for a reward outside the package.
        kwargs: optional settings per entry, e.g. ``{"cosine": {"max_len": 1024}}``.

    Returns:
        One picklable :class:`Reward` per entry, named after it (``"module:brevity"`` is ``brevity``),
        taking ``(completions, **columns)`` and returning ``list[float | None]``.

    Raises:
        TypeError: if ``names`` is a single string rather than a list.
        ValueError: an unknown, unimportable or repeated entry, settings given for an entry not in
            ``names``, or a setting that is unknown, missing, of the wrong type or out of range (e.g.
            ``{"repetition": {"max_penalty": 1.0}}``).
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of reward names, e.g. ['accuracy', 'format'], not a string")
    kwargs = dict(kwargs or {})
    stray = [k for k in kwargs if k not in names]
    if stray:
        raise ValueError(f"reward kwargs given for {stray}, which are not among the chosen rewards {list(names)}")
    funcs = [build_reward(entry, kwargs.get(entry)) for entry in names]
    seen = [f.__name__ for f in funcs]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise ValueError(f"reward(s) {repeated} listed more than once")
    return funcs
