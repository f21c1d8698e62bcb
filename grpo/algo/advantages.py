"""Group-relative advantages (GRPO outcome supervision) and DAPO dynamic-sampling helpers.

Pure torch. Shapes: ``N = B * G`` sequences, ``B`` prompts (groups), ``G = num_generations`` completions per
prompt. A group is ``G`` *consecutive* entries of the flat ``[N]`` reward vector (the layout produced by
repeating each prompt ``G`` times in a row).

NaN rewards mark completions that could not be verified: they are left out of every statistic (mean, std,
"all equal") and receive an advantage of exactly 0, so they carry no learning signal and do not bias their group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SCALES", "group_advantages", "informative_groups", "select_groups"]


def _grouped(rewards: Tensor, num_generations: int) -> Tensor:
    """View ``rewards [N]`` as ``[B, G]``; ValueError on a bad shape or group size."""
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor [N], got {getattr(rewards, 'shape', type(rewards))}")
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    if rewards.numel() % num_generations != 0:
        raise ValueError(f"N={rewards.numel()} rewards is not divisible by num_generations={num_generations}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    return rewards.view(-1, num_generations)  # [B, G]


def _unbiased_std(values: Tensor, valid: Tensor, dim: int | None) -> Tensor:
    """NaN-aware unbiased (Bessel) std of ``values`` over ``valid`` entries; 0 where fewer than 2 are valid.

    ``dim=None`` reduces over everything (result broadcastable to ``values``).
    """
    dims = tuple(range(values.dim())) if dim is None else (dim,)
    count = valid.sum(dim=dims, keepdim=True)  # [B, 1] or [1, 1]
    mean = torch.where(valid, values, 0.0).sum(dim=dims, keepdim=True) / count.clamp(min=1)  # [B, 1] or [1, 1]
    sq_dev = torch.where(valid, values - mean, 0.0) ** 2  # [B, G]
    var = sq_dev.sum(dim=dims, keepdim=True) / (count - 1).clamp(min=1)  # [B, 1] or [1, 1]
    return torch.where(count > 1, var, 0.0).sqrt()  # [B, 1] or [1, 1]


def _scale_group(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath §4.1.2): divide by the group's own std (+ eps). Returns [B, 1]."""
    return _unbiased_std(grouped, valid, dim=1) + eps  # [B, 1]


def _scale_batch(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """Group mean, batch std (trl ``scale_rewards="batch"``; Liu et al. 2025, "Tricks or Traps?", Lite PPO).

    As in trl 1.16, the std is that of the raw rewards over the whole batch (centred on the batch mean, not on
    the group means). Returns [1, 1].
    """
    return _unbiased_std(grouped, valid, dim=None) + eps  # [1, 1]


def _scale_none(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", §3.2): no std division."""
    return torch.ones((1, 1), dtype=grouped.dtype, device=grouped.device)  # [1, 1]


# name -> fn(grouped [B, G], valid [B, G] bool, eps) -> denominator broadcastable to [B, G]
SCALES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "group": _scale_group,
    "batch": _scale_batch,
    "none": _scale_none,
}


def _constant_groups(grouped: Tensor, valid: Tensor) -> Tensor:
    """[B] bool: groups whose valid rewards are all equal (also true with < 2 valid rewards)."""
    hi = torch.where(valid, grouped, float("-inf")).amax(dim=1)  # [B]
    lo = torch.where(valid, grouped, float("inf")).amin(dim=1)  # [B]
    return ~(hi > lo)  # [B]


def group_advantages(rewards: Tensor, num_generations: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages ``A_i = (r_i - mean(group)) / (std + eps)`` for every completion.

    Implements the outcome-supervision advantage of GRPO (Shao et al. 2024, "DeepSeekMath", §4.1.2:
    ``A_i = (r_i - mean(r)) / std(r)``, given to every token of completion i), with the std unbiased (Bessel,
    as torch.std and trl) and ``eps`` added to it (as trl 1.16). ``scale`` picks the denominator from
    :data:`SCALES`: ``"group"`` (GRPO), ``"batch"`` (group mean, std over the whole batch, trl's
    ``scale_rewards="batch"``), ``"none"`` (Dr. GRPO, Liu et al. 2025, §3.2: mean-centering only).

    ``"batch"`` uses the std of exactly the rewards passed in: to match trl under data parallelism, pass the
    rewards gathered from all processes (trl normalises the gathered batch), then slice.

    NaN rewards are excluded from the mean and std of their group and get advantage exactly 0. A group whose
    valid rewards are all equal (zero variance, or fewer than 2 valid rewards) gets exactly 0 everywhere,
    never NaN, whatever ``eps``.

    Args:
        rewards: ``[N]`` float rewards, ``N = B * G``, groups = ``G`` consecutive entries; NaN = unverifiable.
        num_generations: ``G``, completions per prompt.
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: added to the std before dividing (ignored for ``"none"``).

    Returns:
        ``[N]`` advantages, same dtype as ``rewards`` (integer rewards are promoted to the default float dtype).

    Raises:
        ValueError: unknown ``scale``; ``rewards`` not 1-D; ``num_generations`` < 1; ``N`` not divisible by ``G``.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    grouped = _grouped(rewards, num_generations)  # [B, G]
    valid = ~torch.isnan(grouped)  # [B, G]
    count = valid.sum(dim=1, keepdim=True)  # [B, 1]
    mean = torch.where(valid, grouped, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)  # [B, 1]
    centred = torch.where(valid, grouped - mean, 0.0)  # [B, G]
    advantages = centred / SCALES[scale](grouped, valid, eps)  # [B, G]
    flat = _constant_groups(grouped, valid).unsqueeze(1)  # [B, 1]
    advantages = torch.where(flat | ~valid, 0.0, advantages)  # [B, G]
    return advantages.reshape(-1)  # [N]


def informative_groups(rewards: Tensor, num_generations: int) -> Tensor:
    """Groups that carry a learning signal: their valid (non-NaN) rewards are not all equal.

    DAPO dynamic sampling (Yu et al. 2025, "DAPO", §3.2, constraint ``0 < |{o_i : is_equivalent(a, o_i)}| < G``)
    drops prompts whose completions are all right or all wrong, since their group advantages are all zero.
    This is the continuous-reward generalisation: a group is kept iff it has two valid rewards that differ.
    A group with fewer than 2 valid rewards is not informative.

    Args:
        rewards: ``[N]`` rewards, ``N = B * G``, groups = ``G`` consecutive entries; NaN = unverifiable.
        num_generations: ``G``.

    Returns:
        ``[B]`` bool, True for informative groups.

    Raises:
        ValueError: ``rewards`` not 1-D; ``num_generations`` < 1; ``N`` not divisible by ``G``.
    """
    grouped = _grouped(rewards, num_generations)  # [B, G]
    return ~_constant_groups(grouped, ~torch.isnan(grouped))  # [B]


def select_groups(keep: Tensor, num_generations: int, limit: int | None = None) -> Tensor:
    """Flat sequence indices of the kept groups, for DAPO dynamic sampling's batch filling.

    DAPO (Yu et al. 2025, Algorithm 1, dynamic sampling) keeps over-sampling and filtering until the batch holds
    enough informative groups. Given ``keep = informative_groups(...)`` of one generation round, this returns
    the indices into every ``[N, ...]`` tensor of that round (rewards, completions, masks) that belong to kept
    groups, whole groups only and in order, so ``x[idx]`` can be appended to the buffer. ``limit`` caps the
    number of groups taken (the ones still missing from the buffer); the first ``limit`` kept groups are used.

    Args:
        keep: ``[B]`` bool mask over groups.
        num_generations: ``G``.
        limit: at most this many groups (``None``: all kept groups).

    Returns:
        ``[K * G]`` int64 indices, ``K = min(keep.sum(), limit)``, on ``keep``'s device.

    Raises:
        ValueError: ``keep`` not a 1-D bool tensor; ``num_generations`` < 1; ``limit`` < 0.
    """
    if not isinstance(keep, Tensor) or keep.dim() != 1 or keep.dtype != torch.bool:
        raise ValueError("keep must be a 1-D bool tensor [B]")
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got {num_generations!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    groups = keep.nonzero().squeeze(1)[:limit]  # [K]
    offsets = torch.arange(num_generations, device=keep.device)  # [G]
    return (groups.unsqueeze(1) * num_generations + offsets).reshape(-1)  # [K * G]
