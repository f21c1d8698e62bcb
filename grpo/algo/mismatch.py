"""Sampler-versus-trainer mismatch: diagnostics and truncated importance sampling (pure torch).

The sampler (vLLM, or the transformers sampler) and the trainer compute the log-probs of the same sampled
tokens with different kernels, batch shapes and sometimes dtypes, so the rollout comes from a policy
``pi_sampler`` slightly different from the trainer's ``pi_old`` (the trainer's policy at sampling time):
training is silently off-policy. Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy
RL Training", measure this gap and correct it with truncated importance sampling (TIS): the policy-gradient
term of each token is weighted by ``min(pi_old(y_t) / pi_sampler(y_t), C)``. The same correction covers rollouts
sampled by an older policy (asynchronous rollouts, grpo/async_rollouts.py): there ``pi_sampler`` is the stale
behaviour policy. Masking (:func:`ratio_keep_mask`) drops the tokens or whole sequences whose ratio leaves a
band instead of down-weighting them: trl's ``vllm_importance_sampling_mode`` (``token_mask``,
``sequence_mask``) and verl's rollout correction (rejection sampling at token, sequence or geometric-mean level).

Shapes: ``N`` sequences, ``T`` completion tokens; per-token tensors ``[N, T]``, mask ``[N, T]`` bool.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TIS_LEVELS = ("token", "sequence")
IS_MASK_MODES = ("none", "token", "sequence", "geometric")


@torch.no_grad()
def mismatch_sums(trainer_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Masked token sums of the sampler-trainer gap (divide by the token count for means).

    ``mismatch/logprob_abs_diff``: ``|log pi_old(y_t) - log pi_sampler(y_t)|``.
    ``mismatch/kl``: the k3 estimate (Schulman 2020, "Approximating KL Divergence") of
    ``KL(pi_sampler || pi_old)`` from the tokens the sampler drew: with ``x = log pi_old - log pi_sampler``,
    ``exp(x) - x - 1`` (>= 0, unbiased, 0 iff the log-probs agree).

    Args:
        trainer_logprobs, sampler_logprobs: ``[N, T]`` log-probs of the sampled tokens (nats).
        mask: ``[N, T]`` bool, the tokens to count.
    Returns:
        ``{"mismatch/logprob_abs_diff": [], "mismatch/kl": []}`` sums over the masked tokens.
    Raises:
        ValueError: shapes differ.
    """
    _check_shapes(trainer_logprobs, sampler_logprobs, mask)
    x = torch.where(mask, _wide(trainer_logprobs) - _wide(sampler_logprobs), 0.0)  # [N, T]
    return {"mismatch/logprob_abs_diff": x.abs().sum(), "mismatch/kl": (torch.expm1(x) - x).sum()}


@torch.no_grad()
def tis_weights(
    trainer_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, cap: float, level: str = "token"
) -> Tensor:
    """Truncated importance weights ``[N, T]`` (no gradient; 0 on masked-out tokens).

    Yao et al. 2025 (TIS): ``w_t = min(pi_old(y_t) / pi_sampler(y_t), C)`` for ``level="token"``; for
    ``level="sequence"`` every token of a completion gets ``min(prod_t pi_old(y_t) / pi_sampler(y_t), C)``,
    the product over its masked tokens (the sequence-level importance ratio). Computed in log space and
    truncated before ``exp``, so no overflow.

    Args:
        trainer_logprobs: ``[N, T]`` log pi_old of the sampled tokens (the trainer's policy at sampling time).
        sampler_logprobs: ``[N, T]`` log pi_sampler of the same tokens.
        mask: ``[N, T]`` bool.
        cap: C > 0.
        level: ``"token"`` or ``"sequence"``.
    Raises:
        ValueError: ``cap <= 0``, unknown ``level``, shapes differ.
    """
    _check_shapes(trainer_logprobs, sampler_logprobs, mask)
    if not cap > 0:
        raise ValueError(f"tis_cap must be > 0 to weight tokens, got {cap}")
    if level not in TIS_LEVELS:
        raise ValueError(f"unknown tis_level {level!r}; expected one of {TIS_LEVELS}")
    log_w = torch.where(mask, _wide(trainer_logprobs) - _wide(sampler_logprobs), 0.0)  # [N, T]
    if level == "sequence":
        log_w = log_w.sum(dim=-1, keepdim=True).expand_as(log_w)  # [N, T] the sequence's log ratio
    log_cap = math.log(cap)
    weights = torch.where(log_w >= log_cap, cap, torch.exp(log_w.clamp(max=log_cap)))  # [N, T] min(ratio, C), C exact
    return torch.where(mask, weights, 0.0).to(trainer_logprobs.dtype)  # [N, T]


@torch.no_grad()
def ratio_keep_mask(
    trainer_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, mode: str, low: float, high: float
) -> Tensor:
    """``[N, T]`` bool: the tokens whose policy-gradient term is kept by importance-ratio masking.

    With ``x_t = log pi_old(y_t) - log pi_sampler(y_t)`` on the masked tokens, a token (``mode="token"``) or a
    whole sequence is kept iff its ratio lies in ``[low, high]``: ``token``: ``exp(x_t)``; ``sequence``: the
    sequence's importance ratio ``exp(sum_t x_t)`` (trl ``vllm_importance_sampling_mode="sequence_mask"``);
    ``geometric``: its per-token geometric mean ``exp(mean_t x_t)``, which does not grow with length (verl's
    geometric rollout rejection sampling). ``none`` keeps every masked token. Tested in log space (no overflow).

    Args:
        trainer_logprobs, sampler_logprobs: ``[N, T]`` log-probs of the sampled tokens (nats).
        mask: ``[N, T]`` bool, the completion tokens.  mode: one of :data:`IS_MASK_MODES`.
        low, high: the band, ``0 < low <= 1 <= high``.
    Raises:
        ValueError: unknown ``mode``, a band that excludes 1 or is not positive, shapes differ.
    """
    _check_shapes(trainer_logprobs, sampler_logprobs, mask)
    if mode not in IS_MASK_MODES:
        raise ValueError(f"unknown is_mask {mode!r}; expected one of {IS_MASK_MODES}")
    if not 0 < low <= 1 <= high:
        raise ValueError(f"need 0 < is_mask_low <= 1 <= is_mask_high, got {low} and {high}")
    if mode == "none":
        return mask.clone()
    x = torch.where(mask, _wide(trainer_logprobs) - _wide(sampler_logprobs), 0.0)  # [N, T]
    if mode == "sequence":
        x = x.sum(dim=-1, keepdim=True)  # [N, 1] log of the sequence ratio
    elif mode == "geometric":
        x = x.sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).clamp(min=1)  # [N, 1]
    inside = (x >= math.log(low)) & (x <= math.log(high))  # [N, T] or [N, 1]
    return mask & inside  # [N, T]


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16 log-probs are too coarse for ratios near 1); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_shapes(trainer_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor) -> None:
    if trainer_logprobs.shape != sampler_logprobs.shape or mask.shape != trainer_logprobs.shape:
        raise ValueError(
            f"trainer_logprobs {tuple(trainer_logprobs.shape)}, sampler_logprobs "
            f"{tuple(sampler_logprobs.shape)} and mask {tuple(mask.shape)} must have one shape [N, T]"
        )
