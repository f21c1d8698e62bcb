"""Per-rollout statistics: reward, length, truncation, group spread and R1-Zero's reflection rate."""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from grpo.algo.advantages import informative_groups
from grpo.eval.metrics import length_stats

# Words that mark a model re-examining its work: DeepSeek-R1-Zero's "aha moment" (DeepSeek-AI 2025, sec. 2.2.4).
REFLECTION_PATTERN = re.compile(
    r"\b(wait|let me (re-?)?check|let me verify|verify|double[- ]check|re-?check|re-?evaluate|reconsider|"
    r"on second thought|hmm|let me think again)\b",
    re.IGNORECASE,
)
CORRECTNESS_REWARDS = ("accuracy", "reasoning_gym")


def reflection_rate(completions: list[str]) -> float:
    """Share of completions that use at least one reflection word or phrase (``REFLECTION_PATTERN``)."""
    if not completions:
        return 0.0
    return sum(bool(REFLECTION_PATTERN.search(c)) for c in completions) / len(completions)


def correctness_index(names: list[str]) -> int | None:
    """Column of the first correctness reward (``CORRECTNESS_REWARDS``: accuracy, reasoning_gym) in ``names``;
    None if neither is used."""
    for name in CORRECTNESS_REWARDS:
        if name in names:
            return names.index(name)
    return None


def correct_mask(per_func: Tensor, names: list[str]) -> Tensor | None:
    """``[N]`` bool: the first correctness reward (accuracy, reasoning_gym) is >= 1; None if neither is used."""
    column = correctness_index(names)
    return None if column is None else per_func[:, column] >= 1.0


def rollout_metrics(
    rewards: Tensor,
    per_func: Tensor,
    names: list[str],
    lengths: Tensor,
    truncated: Tensor,
    completions: list[str],
    num_generations: int,
) -> dict[str, float | None]:
    """Metrics of one rollout of N = B*G completions (all tensors gathered from every process).

    Args:
        rewards: ``[N]`` combined rewards (NaN = unverifiable). per_func: ``[N, F]``. lengths: ``[N]``
        completion tokens. truncated: ``[N]`` bool.
    Returns:
        reward (mean), reward_std (mean over groups of the unbiased in-group std), rewards/<name>,
        completion_length/{mean,min,max,correct_mean,incorrect_mean} and tokens_per_correct (tokens; None where
        no completion qualifies; :func:`grpo.eval.metrics.length_stats`), truncated_frac, zero_std_frac (share
        of uninformative groups, whose advantages are all 0: :func:`grpo.algo.advantages.informative_groups`)
        and reflection_rate.
    """
    groups = rewards.view(-1, num_generations)  # [B, G]
    group_std = torch.stack([g[~g.isnan()].std() if (~g.isnan()).sum() > 1 else torch.tensor(0.0) for g in groups])
    metrics: dict[str, float | None] = {
        "reward": float(rewards.nanmean()) if (~rewards.isnan()).any() else None,
        "reward_std": float(group_std.mean()),
        "zero_std_frac": float((~informative_groups(rewards, num_generations)).float().mean()),
    }
    for j, name in enumerate(names):
        column = per_func[:, j]
        metrics[f"rewards/{name}"] = float(column.nanmean()) if (~column.isnan()).any() else None
    correct = correct_mask(per_func, names)
    verdicts = [0.0] * len(lengths) if correct is None else correct.float().tolist()
    lengths_stats = length_stats(lengths.tolist(), verdicts, truncated.tolist())  # the evaluation's definitions
    if correct is None:  # no correctness reward: no correct/incorrect split
        for key in ("completion_length/correct_mean", "completion_length/incorrect_mean", "tokens_per_correct"):
            lengths_stats[key] = None
    metrics.update(
        {
            **lengths_stats,
            "completion_length/min": float(lengths.min()),
            "completion_length/max": float(lengths.max()),
            "reflection_rate": reflection_rate(completions),
        }
    )
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def logged_completions(result, num_generations: int, limit: int, reward_names: list[str]) -> list[dict]:
    """The first ``limit`` completions of a step (``result``: a :class:`grpo.types.StepResult`), with their
    prompt, gold solution, reward, advantage and each reward's value (None for NaN), for completions.jsonl."""
    rows, rollout, per_func = result.scored.rows, result.scored.rollout, result.scored.per_func
    g, n = num_generations, min(limit, len(rollout))
    return [
        {
            "prompt": rows[i // g]["prompt"],
            "completion": rollout.completions[i],
            "solution": rows[i // g]["solution"],
            "reward": _num(result.scored.rewards[i]),
            "advantage": _num(result.advantages[i]),
            **{f"rewards/{name}": _num(per_func[i, j]) for j, name in enumerate(reward_names)},
        }
        for i in range(n)
    ]


def _num(x: Tensor) -> float | None:
    value = float(x)
    return None if value != value else value
