"""Typed records that flow through a GRPO step. Shapes: N = B*G sequences, P prompt tokens, T completion tokens."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


@dataclass
class Rollout:
    """What a sampler returns for N = B*G completions (the G completions of a prompt are consecutive)."""

    prompt_ids: Tensor  # [N, P] long, left-padded
    prompt_mask: Tensor  # [N, P] long, 1 on real prompt tokens
    completion_ids: Tensor  # [N, T] long, right-padded
    completion_mask: Tensor  # [N, T] long, 1 up to and including the first EOS
    truncated: Tensor  # [N] bool, True when no EOS came within max_completion_length
    completions: list[str]  # N decoded completion texts (special tokens removed)
    sampler_logprobs: Tensor | None = None  # [N, T] float, the sampler's own log-probs of the sampled tokens

    def __len__(self) -> int:
        return self.completion_ids.shape[0]


@dataclass
class ScoredRollout:
    """A rollout with its prompts and rewards: what one GRPO step learns from (and one round of dynamic sampling)."""

    rows: list[dict]  # B prompt rows of the data set (prompt, prompt_ids, solution, ...)
    rollout: Rollout  # N = B*G completions, the G of a prompt consecutive
    per_func: Tensor  # [N, F] float, each reward function's value (NaN = unverifiable)
    rewards: Tensor  # [N] float, their weighted sum (NaN when every function is NaN)
    sampling_stats: dict[str, float] = field(default_factory=dict)  # dynamic sampling's counts (empty without it)


@dataclass
class StepResult:
    """Everything one training step produced, for the logger."""

    scored: ScoredRollout  # prompts, completions and rewards
    advantages: Tensor  # [N] float
    update: list[dict[str, float]]  # one metrics dict per optimizer step taken on the rollout
    step_time: float  # seconds, the whole step
    evaluation: dict[str, float]  # eval/<benchmark>/... when evaluated at this step, else {}


@dataclass
class TrainBatch:
    """One process's training data for a rollout: tokens, masks, advantages and fixed log-probs."""

    prompt_ids: Tensor  # [N, P] long, left-padded
    prompt_mask: Tensor  # [N, P] long
    completion_ids: Tensor  # [N, T] long, right-padded
    completion_mask: Tensor  # [N, T] float, 0 on padding (and on truncated completions when masked)
    advantages: Tensor  # [N] float
    old_logprobs: Tensor | None = None  # [N, T] log-probs under the policy that sampled (None when mu = 1)
    ref_logprobs: Tensor | None = None  # [N, T] log-probs under the reference model (None when beta = 0)
    sampler_logprobs: Tensor | None = None  # [N, T] the sampler's own log-probs (Rollout.sampler_logprobs)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, index: slice | Tensor) -> TrainBatch:
        """The rows ``index``, with padding columns that are empty in every selected row trimmed away."""
        parts = {f.name: (v[index] if isinstance(v := getattr(self, f.name), Tensor) else v) for f in fields(self)}
        batch = TrainBatch(**parts)
        return batch.trimmed()

    def trimmed(self) -> TrainBatch:
        """Drop leading prompt columns and trailing completion columns that are padding in every row."""
        p_keep = int(self.prompt_mask.sum(0).nonzero().min()) if self.prompt_mask.any() else 0
        t_len = int(self.completion_mask.sum(0).nonzero().max()) + 1 if self.completion_mask.any() else 1
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("prompt"):
                v = v[:, p_keep:]
            elif isinstance(v, Tensor) and v.dim() == 2:
                v = v[:, :t_len]
            out[f.name] = v
        return replace(self, **out)

    def split(self, size: int) -> list[TrainBatch]:
        """Consecutive chunks of ``size`` rows (the last may be smaller), each trimmed."""
        return [self.select(slice(i, i + size)) for i in range(0, len(self), size)]


def stack_or_none(parts: list[Tensor | None], dim: int = 0) -> Tensor | None:
    """``torch.cat`` of the parts, or None when they are None."""
    return None if parts[0] is None else torch.cat(parts, dim)


def _pad_to(x: Tensor, width: int, value: int | float, left: bool) -> Tensor:
    pad = x.new_full((x.shape[0], width - x.shape[1]), value)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise, padding prompts on the left and completions on the right to a common width."""
    p = max(r.prompt_ids.shape[1] for r in parts)
    t = max(r.completion_ids.shape[1] for r in parts)
    return Rollout(
        prompt_ids=torch.cat([_pad_to(r.prompt_ids, p, pad_id, left=True) for r in parts]),  # [N, P]
        prompt_mask=torch.cat([_pad_to(r.prompt_mask, p, 0, left=True) for r in parts]),  # [N, P]
        completion_ids=torch.cat([_pad_to(r.completion_ids, t, pad_id, left=False) for r in parts]),  # [N, T]
        completion_mask=torch.cat([_pad_to(r.completion_mask, t, 0, left=False) for r in parts]),  # [N, T]
        truncated=torch.cat([r.truncated for r in parts]),  # [N]
        completions=[c for r in parts for c in r.completions],
        sampler_logprobs=None
        if parts[0].sampler_logprobs is None
        else torch.cat([_pad_to(r.sampler_logprobs, t, 0.0, left=False) for r in parts]),
    )


def select_rollout(rollout: Rollout, index: Tensor) -> Rollout:
    """The rows ``index`` ``[K]`` of a rollout."""
    idx = index.tolist()
    return Rollout(
        rollout.prompt_ids[index],
        rollout.prompt_mask[index],
        rollout.completion_ids[index],
        rollout.completion_mask[index],
        rollout.truncated[index],
        [rollout.completions[i] for i in idx],
        None if rollout.sampler_logprobs is None else rollout.sampler_logprobs[index],
    )
