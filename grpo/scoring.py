"""Run the reward functions on a rollout and combine them: the weighted sum that GRPO optimises."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from grpo.types import Rollout

RewardFunc = Callable[..., list]


def reward_name(func: RewardFunc) -> str:
    """The name a reward is logged under (``rewards/<name>``)."""
    return getattr(func, "__name__", type(func).__name__)


# Reward settings that the run configuration already decides: filled in unless a recipe sets them.
DERIVED_SETTINGS = {
    "think_prefilled": lambda data, args: data.think_prefill,
    "max_completion_length": lambda data, args: args.max_completion_length,
    "num_generations": lambda data, args: args.num_generations,
}


def fill_run_settings(
    names: list[str], reward_kwargs: dict[str, dict], run_settings: dict[str, Any]
) -> dict[str, dict]:
    """``reward_kwargs`` (``{reward name: settings}``, e.g. a recipe's) with each of ``run_settings`` (settings
    the run decides, e.g. ``{"think_prefilled": True}``) added for the rewards in ``names`` that accept it,
    unless already set there. Entries that do not resolve are left alone (``get_reward_funcs`` raises the clear
    error). ``names`` may hold ``module.path:function`` entries (custom rewards)."""
    from rewards.registry import resolve_reward, reward_settings

    kwargs = {name: dict(v) for name, v in reward_kwargs.items()}
    for name in names:
        try:
            accepted = reward_settings(resolve_reward(name)[1])
        except ValueError:
            continue
        for setting, value in run_settings.items():
            if setting in accepted:
                kwargs.setdefault(name, {}).setdefault(setting, value)
    return kwargs


def build_reward_funcs(data_args, args) -> list[RewardFunc]:
    """The recipe's rewards with their settings bound, settings that the run config decides included
    (``think_prefilled``, ``max_completion_length``, ``num_generations``), so they are never set twice."""
    import rewards

    run_settings = {setting: derive(data_args, args) for setting, derive in DERIVED_SETTINGS.items()}
    return rewards.get_reward_funcs(
        args.reward_funcs, fill_run_settings(args.reward_funcs, args.reward_kwargs, run_settings)
    )


def completion_id_lists(rollout: Rollout) -> list[list[int]]:
    """The completion ids of each of the N rows of ``rollout``, padding removed (N lists of tokens)."""
    return [ids[m.bool()].tolist() for ids, m in zip(rollout.completion_ids, rollout.completion_mask)]


def reward_columns(
    rows: list[dict],
    completion_ids: list[list[int]],
    truncated: list[bool],
    skip: tuple[str, ...] = ("prompt_ids", "prompt"),
) -> dict[str, list]:
    """The keyword columns every reward (and verifier) receives, TRL's convention, for training and evaluation.

    Args:
        rows: one data row per completion (a prompt's row repeated for each of its completions).
        completion_ids: the tokens of each completion, unpadded (:func:`completion_id_lists`).
        truncated: per completion, True when it hit the length cap without EOS.
        skip: row fields not passed on (besides ``prompt``, given as ``prompts``).
    Returns:
        ``{field: [value per completion]}`` for the first row's fields but ``skip`` (None where a row lacks
        one), plus ``prompts``, ``completion_ids`` and ``truncated``.
    """
    columns = {key: [r.get(key) for r in rows] for key in rows[0] if key not in skip}
    columns.update(prompts=[r["prompt"] for r in rows], completion_ids=completion_ids, truncated=truncated)
    return columns


def rollout_reward_columns(rows: list[dict], rollout: Rollout, num_generations: int) -> dict[str, list]:
    """:func:`reward_columns` of a rollout of ``num_generations`` completions per row of ``rows`` (B rows,
    N = B*G completions, the G of a row consecutive)."""
    flat = [row for row in rows for _ in range(num_generations)]
    return reward_columns(flat, completion_id_lists(rollout), rollout.truncated.tolist())


def score_completions(
    reward_funcs: list[RewardFunc],
    completions: list[str],
    columns: dict[str, list[Any]],
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Call every reward on the N completions (TRL's convention: ``f(completions, **columns)``).

    Returns ``[N, F]`` float32, NaN where a reward returned None (cannot be verified). With ``stats`` given, it
    adds to ``rewards/<name>/time_s`` (seconds in the call) and ``rewards/<name>/timeouts`` (verifier calls
    given up for time, :func:`rewards.count_timeouts`) of every reward (the caller clears it once logged).
    Raises ``ValueError`` naming the reward when it returns the wrong number of values or a non-number.
    """
    from rewards import count_timeouts

    n = len(completions)
    table = torch.full((n, len(reward_funcs)), math.nan)  # [N, F]
    for j, func in enumerate(reward_funcs):
        with count_timeouts() as count:
            start = time.perf_counter()
            values = func(completions=completions, **columns)
        if stats is not None:
            for key, value in (("time_s", time.perf_counter() - start), ("timeouts", float(count.timeouts))):
                stats[f"rewards/{reward_name(func)}/{key}"] = (
                    stats.get(f"rewards/{reward_name(func)}/{key}", 0.0) + value
                )
        if len(values) != n:
            raise ValueError(f"reward {reward_name(func)!r} returned {len(values)} values for {n} completions")
        for i, value in enumerate(values):
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(
                    f"reward {reward_name(func)!r} returned {value!r} (a {type(value).__name__}) "
                    f"for completion {i}; expected a float or None"
                )
            table[i, j] = float(value)
    return table


def combine_rewards(per_func: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum over rewards ``[N, F] -> [N]``, skipping NaN (None) entries; NaN where all are NaN."""
    valid = ~per_func.isnan()  # [N, F]
    total = torch.where(valid, per_func * weights, 0.0).sum(dim=1)  # [N]
    return torch.where(valid.any(dim=1), total, math.nan)


def score_rollout(
    rows: list[dict],
    rollout: Rollout,
    num_generations: int,
    reward_funcs: list[RewardFunc],
    weights: Tensor,
    stats: dict[str, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Rewards of a rollout of ``num_generations`` completions per row of ``rows``: per function ``[N, F]`` (NaN =
    unverifiable, :func:`score_completions`, which adds its timings to ``stats``) and their weighted sum ``[N]``
    (:func:`combine_rewards`). Raises ``ValueError`` like :func:`score_completions`."""
    columns = rollout_reward_columns(rows, rollout, num_generations)
    per_func = score_completions(reward_funcs, rollout.completions, columns, stats)  # [N, F]
    return per_func, combine_rewards(per_func, weights)  # [N, F], [N]
