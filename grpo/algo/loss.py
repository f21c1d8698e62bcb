"""Clipped-surrogate policy losses for GRPO and its variants (pure torch).

Shapes: ``N = B * G`` sequences, ``T`` completion tokens (right-padded); per-token tensors ``[N, T]``,
``advantages`` ``[N]``. Padding is masked with ``torch.where`` (never ``* mask``: ``NaN * 0 = NaN``); the
reduction divides by global counts, so micro-batch and shard losses add up to the full-batch loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from grpo.algo.mismatch import IS_MASK_MODES, TIS_LEVELS, mismatch_sums, ratio_keep_mask, tis_weights

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "GlobalCounts",
    "LossSettings",
    "LossType",
    "Normalisers",
    "kl_divergence",
    "policy_loss",
]


# --- KL estimators (Schulman 2020, "Approximating KL Divergence"); y ~ pi_theta, x = log pi_ref - log pi_theta
def _kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return logprobs - ref_logprobs  # [N, T] unbiased, high variance, can be negative


def _kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2  # [N, T] biased, low variance, >= 0


def _kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    log_ratio = ref_logprobs - logprobs  # [N, T]
    return torch.expm1(log_ratio) - log_ratio  # [N, T] exp(x) - x - 1: unbiased, >= 0 (DeepSeekMath eq. 4)


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": _kl_k1, "k2": _kl_k2, "k3": _kl_k3}


def kl_divergence(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled from pi_theta.

    Schulman (2020), "Approximating KL Divergence", with ``x = log pi_ref(y) - log pi_theta(y)``:
    ``k1 = -x = logp - logref``; ``k2 = x^2 / 2``; ``k3 = exp(x) - x - 1`` (>= 0, 0 iff equal; the estimator in
    DeepSeekMath eq. 4, computed with ``expm1`` for accuracy near 0).

    Args:
        logprobs: ``[N, T]`` log pi_theta of the sampled tokens.
        ref_logprobs: ``[N, T]`` log pi_ref of the same tokens.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see :data:`KL_ESTIMATORS`).

    Returns:
        ``[N, T]`` per-token estimates (no masking; callers mask).

    Raises:
        ValueError: unknown ``estimator``; shapes differ.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}; expected one of {sorted(KL_ESTIMATORS)}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"ref_logprobs shape {tuple(ref_logprobs.shape)} != logprobs shape {tuple(logprobs.shape)}")
    return KL_ESTIMATORS[estimator](logprobs, ref_logprobs)  # [N, T]


# --- Importance ratios (log space). Inputs are already sanitised (padding = 0).
def _token_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """PPO/GRPO token ratio ``log r_t = log pi_theta(y_t) - log pi_old(y_t)`` (DeepSeekMath eq. 3). [N, T]."""
    return logprobs - old_logprobs  # [N, T]


def _sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO-token ratio (Zheng et al. 2025, GSPO §4.3, GSPO-token): ``s_t = sg[s] * pi(y_t) / sg[pi(y_t)]``.

    ``log s = mean_t (log pi_theta - log pi_old)`` over the sequence's tokens (GSPO §4.1). Every token's value
    is ``s``; its gradient is ``s * grad log pi(y_t)``, so with one advantage per sequence and a per-sequence
    token mean this equals trl's ``importance_sampling_level="sequence"`` in value and gradient. Exception: with a
    per-token mask on the policy term (``top_entropy_quantile < 1``) the value still matches, but the gradient
    stays on the kept tokens here, whereas trl's ``s`` carries it to every token of the sequence. [N, T].
    """
    token = logprobs - old_logprobs  # [N, T]
    length = mask.sum(dim=-1, keepdim=True).clamp(min=1)  # [N, 1]
    seq = torch.where(mask, token, 0.0).sum(dim=-1, keepdim=True) / length  # [N, 1]
    return seq.detach() + logprobs - logprobs.detach()  # [N, T]


# --- Aggregators: masked per-token loss [N, T] (zeros on padding) -> scalar, with global normalisers.
class Normalisers(NamedTuple):
    """Global counts over the whole optimizer step (all micro-batches, all processes)."""

    num_sequences: float | Tensor
    num_tokens: float | Tensor
    max_completion_length: int | None


def _sequence_mean(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """GRPO (DeepSeekMath eq. 3): ``1/G sum_i 1/|o_i| sum_t`` -> sum of per-sequence token means / num_sequences."""
    per_seq = per_token.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)  # [N]
    return per_seq.sum() / norm.num_sequences  # []


def _token_mean(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """DAPO token-level loss (Yu et al. 2025, §3.3): ``sum_i sum_t / sum_i |o_i|`` over the global batch."""
    return per_token.sum() / norm.num_tokens  # []


def _constant_length(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", §3.2): constant normaliser.

    Token sum / (max_completion_length * num_sequences).
    """
    return per_token.sum() / (norm.max_completion_length * norm.num_sequences)  # []


class LossType(NamedTuple):
    """A loss variant: how the importance ratio is formed and how token losses are reduced."""

    log_ratio: Callable[[Tensor, Tensor, Tensor], Tensor]
    aggregate: Callable[[Tensor, Tensor, Normalisers], Tensor]


LOSS_TYPES: dict[str, LossType] = {
    "grpo": LossType(_token_log_ratio, _sequence_mean),
    "dapo": LossType(_token_log_ratio, _token_mean),
    "dr_grpo": LossType(_token_log_ratio, _constant_length),
    "gspo": LossType(_sequence_log_ratio, _sequence_mean),
}


# --- Pieces of the per-token objective
def _clipped_surrogate(
    ratio: Tensor, advantages: Tensor, epsilon_low: float, epsilon_high: float, delta: float | None
) -> Tensor:
    """``min(r A, clip(r, 1-eps_low, 1+eps_high) A)`` (PPO; DeepSeekMath eq. 3; clip-higher: DAPO §3.1).

    With ``delta``: dual-clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL", §3, dual-clip):
    for ``A < 0`` the objective is ``max(min(r A, clip(r) A), delta * A)``, bounding the loss of tokens whose
    ratio exploded. ratio, result: [N, T]; advantages: [N, 1].
    """
    unclipped = ratio * advantages  # [N, T]
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * advantages  # [N, T]
    surrogate = torch.min(unclipped, clipped)  # [N, T]
    if delta is not None:
        surrogate = torch.where(advantages < 0, torch.max(surrogate, delta * advantages), surrogate)  # [N, T]
    return surrogate


def _quantile(values: Tensor, q: float) -> Tensor:
    """Linear-interpolation quantile of a 1-D tensor (torch.quantile's default, without its size limit)."""
    ordered = values.sort().values  # [M]
    pos = q * (ordered.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, ordered.numel() - 1)
    return torch.lerp(ordered[lo], ordered[hi], pos - lo)  # []


def _high_entropy_tokens(entropies: Tensor, mask: Tensor, top_entropy_quantile: float) -> Tensor:
    """[N, T] bool: masked tokens with entropy >= the (1 - rho) quantile of this call's masked entropies.

    Wang et al. 2025, "Beyond the 80/20 Rule"): keep the policy gradient on the top-rho "forking" tokens.
    Same rule as trl's ``get_high_entropy_mask``: rho = ``top_entropy_quantile`` (0.2 in the paper).
    """
    valid = entropies.detach()[mask]  # [M]
    if valid.numel() == 0:
        return torch.zeros_like(mask)
    threshold = _quantile(valid, 1.0 - top_entropy_quantile)  # []
    return mask & (entropies.detach() >= threshold)  # [N, T]


@torch.no_grad()
def _metrics(
    ratio: Tensor,
    advantages: Tensor,
    mask: Tensor,
    epsilon_low: float,
    epsilon_high: float,
    kl: Tensor | None,
    entropies: Tensor | None,
) -> dict[str, float]:
    """Masked token means over this call: kl, clip fractions, mean ratio, entropy (one host sync)."""
    count = mask.sum().clamp(min=1)  # []
    low = (advantages < 0) & (ratio < 1.0 - epsilon_low)  # [N, T]
    high = (advantages > 0) & (ratio > 1.0 + epsilon_high)  # [N, T]
    named = {"kl": kl, "clip_frac/low": low, "clip_frac/high": high, "ratio/mean": ratio, "entropy": entropies}
    named = {k: v for k, v in named.items() if v is not None}
    sums = torch.stack([torch.where(mask, v.to(ratio.dtype), 0.0).sum() for v in named.values()])  # [K]
    out = dict(zip(named, (sums / count).tolist()))
    out.setdefault("kl", 0.0)
    return out


def _at_least_one(count: float | Tensor) -> float | Tensor:
    """Token-count normaliser clamped to >= 1 (a batch whose completions are all masked has loss 0, not NaN)."""
    return count.clamp(min=1) if isinstance(count, Tensor) else max(count, 1)


# --- Public entry point
@dataclass(frozen=True)
class LossSettings:
    """The loss's fixed settings (``GRPOArguments`` fields of the same names), checked once when built.

    Attributes: ``loss_type`` (a :data:`LOSS_TYPES` name), ``epsilon_low`` in [0, 1) and ``epsilon_high`` >= 0
    (clip range), ``delta`` (dual clip, > 1, or None), ``beta`` >= 0 (KL coefficient), ``kl_estimator`` (a
    :data:`KL_ESTIMATORS` name), ``max_completion_length`` (tokens, > 0; the constant normaliser of ``dr_grpo``,
    which requires it), ``entropy_coef`` (entropy bonus), ``top_entropy_quantile`` rho in [0, 1] (1 = every
    token), ``tis_cap`` >= 0 (0 = no truncated importance sampling), ``tis_level`` (``token`` or
    ``sequence``), ``is_mask`` (a :data:`~grpo.algo.mismatch.IS_MASK_MODES` name) and its band ``is_mask_low``
    <= 1 <= ``is_mask_high``. See :func:`policy_loss` for what each does.

    Raises:
        ValueError: naming the first field outside its range.
    """

    loss_type: str = "grpo"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    delta: float | None = None
    beta: float = 0.0
    kl_estimator: str = "k3"
    max_completion_length: int | None = None
    entropy_coef: float = 0.0
    top_entropy_quantile: float = 1.0
    tis_cap: float = 0.0
    tis_level: str = "token"
    is_mask: str = "none"
    is_mask_low: float = 0.5
    is_mask_high: float = 2.0

    def __post_init__(self) -> None:
        rules = [
            ("loss_type", self.loss_type in LOSS_TYPES, f"one of {sorted(LOSS_TYPES)}"),
            ("kl_estimator", self.kl_estimator in KL_ESTIMATORS, f"one of {sorted(KL_ESTIMATORS)}"),
            ("epsilon_low", 0.0 <= self.epsilon_low < 1.0, "in [0, 1)"),
            ("epsilon_high", self.epsilon_high >= 0.0, ">= 0"),
            ("delta", self.delta is None or self.delta > 1.0, "> 1 (dual clip) or None"),
            ("beta", self.beta >= 0.0, ">= 0"),
            ("max_completion_length", self.max_completion_length is None or self.max_completion_length > 0, "> 0"),
            (
                "max_completion_length",
                self.loss_type != "dr_grpo" or self.max_completion_length is not None,
                "given for loss_type='dr_grpo' (its constant normaliser)",
            ),
            ("top_entropy_quantile", 0.0 <= self.top_entropy_quantile <= 1.0, "in [0, 1]"),
            ("tis_cap", self.tis_cap >= 0.0, ">= 0 (0 = off)"),
            ("tis_level", self.tis_level in TIS_LEVELS, f"one of {TIS_LEVELS}"),
            ("is_mask", self.is_mask in IS_MASK_MODES, f"one of {IS_MASK_MODES}"),
            ("is_mask_low", 0.0 < self.is_mask_low <= 1.0, "in (0, 1]"),
            ("is_mask_high", self.is_mask_high >= 1.0, ">= 1"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")


class GlobalCounts(NamedTuple):
    """Counts over the whole optimizer step (all gradient-accumulation micro-batches, all processes)."""

    num_sequences: float | Tensor  # sequences, > 0
    num_tokens: float | Tensor  # completion tokens in the loss, >= 0 (0: every completion masked, loss 0)


def _check(
    logprobs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    others: dict[str, Tensor | None],
    settings: LossSettings,
    counts: GlobalCounts | None,
) -> Tensor:
    """Validate the tensors against each other and ``settings`` (ValueError); return the mask as bool [N, T]."""
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got {tuple(logprobs.shape)}")
    for name, t in {"completion_mask": completion_mask, **others}.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logprobs shape {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [N]={logprobs.shape[0]}, got {tuple(advantages.shape)}")
    if settings.beta > 0 and others["ref_logprobs"] is None:
        raise ValueError(f"beta={settings.beta} > 0 needs ref_logprobs")
    if others["entropies"] is None and (settings.entropy_coef != 0.0 or settings.top_entropy_quantile < 1.0):
        raise ValueError("entropy_coef != 0 or top_entropy_quantile < 1 requires entropies")
    if (settings.tis_cap > 0 or settings.is_mask != "none") and others["sampler_logprobs"] is None:
        raise ValueError(f"tis_cap={settings.tis_cap} > 0 or is_mask={settings.is_mask!r} needs sampler_logprobs")
    if counts is not None and not isinstance(counts.num_sequences, Tensor) and not counts.num_sequences > 0:
        raise ValueError(f"num_sequences must be > 0, got {counts.num_sequences}")
    if counts is not None and not isinstance(counts.num_tokens, Tensor) and counts.num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0 (0: every completion masked, loss 0), got {counts.num_tokens}")
    return completion_mask if completion_mask.dtype == torch.bool else completion_mask != 0


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    settings: LossSettings = LossSettings(),  # noqa: B008 (frozen: one shared default is safe)
    *,
    ref_logprobs: Tensor | None = None,
    entropies: Tensor | None = None,
    sampler_logprobs: Tensor | None = None,
    counts: GlobalCounts | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped-surrogate GRPO-family loss (to minimise) and its metrics.

    Per token (DeepSeekMath, Shao et al. 2024, eq. 3): ``r = exp(logp - old)``, ``surrogate = min(r A,
    clip(r, 1 - epsilon_low, 1 + epsilon_high) A)`` (clip-higher: DAPO, Yu et al. 2025, §3.1); ``delta`` (> 1)
    adds dual-clip for ``A < 0``: ``max(surrogate, delta A)`` (Ye et al. 2020, dual-clip PPO). Then
    ``loss_t = -surrogate * [high-entropy token] + beta * KL_t - entropy_coef * H_t``, reduced by
    ``LOSS_TYPES[settings.loss_type]`` (every setting named here is a field of :class:`LossSettings`):

    - ``grpo``: sum over sequences of the masked token mean / ``num_sequences`` (DeepSeekMath eq. 3).
    - ``dapo``: masked token sum / ``num_tokens`` (DAPO §3.3, token-level loss).
    - ``dr_grpo``: masked token sum / (``max_completion_length * num_sequences``) (Dr. GRPO, Liu et al. 2025).
    - ``gspo``: GSPO-token (Zheng et al. 2025, §4.3) with ``s = exp(mean_t(logp - old))``, clipped with
      epsilon_low / epsilon_high, reduced like ``grpo``; equals trl's ``importance_sampling_level="sequence"``.

    ``counts`` (:class:`GlobalCounts`: ``num_sequences``, ``num_tokens``): counts over the whole optimizer step
    (all gradient-accumulation micro-batches on all processes); ``None`` = this call's own (N, masked tokens). With them, the returned losses
    and their gradients summed over micro-batches and processes equal the full-batch ones. DDP *averages*
    gradients, so under DDP scale the loss by the world size (trl: dapo normaliser ``num_items / num_processes``).

    KL (Schulman 2020 estimator ``kl_estimator``) is added on every completion token when ``beta > 0``.
    ``entropies`` (per-token policy entropy, computed elsewhere, with grad for the bonus to act):
    ``entropy_coef`` subtracts ``entropy_coef * H_t`` on every completion token, aggregated like the rest;
    ``top_entropy_quantile = rho < 1`` keeps the policy-gradient term only on tokens with entropy >= the
    ``(1 - rho)`` quantile (linear interpolation) of the masked entropies of *this call* (Wang et al. 2025,
    "Beyond the 80/20 Rule"; trl's rule, except that trl gathers the quantile over processes). Padded positions
    may hold anything (NaN, inf): they are replaced with ``torch.where`` first and affect neither loss nor grad.

    ``sampler_logprobs`` (the sampler's own log-probs of the tokens) adds the sampler-trainer mismatch metrics
    (``grpo.algo.mismatch.mismatch_sums``, against ``old`` = pi_old of the trainer); ``tis_cap`` C > 0 multiplies the
    policy-gradient term of each token by the truncated importance weight ``min(pi_old / pi_sampler, C)``
    (per token or per sequence, ``tis_level``; Yao et al. 2025, ``grpo.algo.mismatch.tis_weights``); ``is_mask``
    (``token``, ``sequence``, ``geometric``) zeroes the policy-gradient term of the tokens, or whole sequences,
    whose ratio ``pi_old / pi_sampler`` leaves ``[is_mask_low, is_mask_high]`` (trl's
    ``vllm_importance_sampling_mode`` ``*_mask``, verl's rollout rejection sampling;
    ``grpo.algo.mismatch.ratio_keep_mask``); both apply together when both are set. The KL and entropy terms are
    neither weighted nor masked.

    Args:
        logprobs: ``[N, T]`` log pi_theta of the completion tokens (with grad).
        old_logprobs: ``[N, T]`` log pi_old, or ``None`` = on-policy (``logprobs.detach()``: ratio 1, exact grad).
        advantages: ``[N]``.  completion_mask: ``[N, T]`` bool or 0/1.
        settings: the fixed settings, validated when built (:class:`LossSettings`).
        ref_logprobs, entropies, sampler_logprobs: ``[N, T]`` or None.  counts: see above.

    Returns:
        ``(loss [], metrics)``; metrics are floats, masked token means over this call: ``kl`` (0.0 without ref),
        ``clip_frac/low`` (A < 0, r < 1 - epsilon_low), ``clip_frac/high`` (A > 0, r > 1 + epsilon_high),
        ``ratio/mean``, and ``entropy`` when ``entropies`` is given; with ``sampler_logprobs``:
        ``mismatch/logprob_abs_diff``, ``mismatch/kl``; with TIS: ``tis/weight_mean``, ``tis/capped_frac``; with
        ``is_mask``: ``is_mask/masked_frac`` (share of tokens whose policy-gradient term was masked).

    Raises:
        ValueError: shape mismatch; beta > 0 without ref_logprobs; entropy options without entropies; tis_cap > 0
            or is_mask without sampler_logprobs; num_sequences <= 0 or num_tokens < 0 (0 is allowed: all masked, loss 0).
            Settings out of range raise when the :class:`LossSettings` is built.
    """
    mask = _check(
        logprobs,
        advantages,
        completion_mask,
        {
            "old_logprobs": old_logprobs,
            "ref_logprobs": ref_logprobs,
            "entropies": entropies,
            "sampler_logprobs": sampler_logprobs,
        },
        settings,
        counts,
    )  # [N, T] bool
    st, spec = settings, LOSS_TYPES[settings.loss_type]
    logp = torch.where(mask, logprobs, 0.0)  # [N, T] padding garbage removed before any arithmetic
    old = logp.detach() if old_logprobs is None else torch.where(mask, old_logprobs, 0.0)  # [N, T]
    adv = advantages.to(logp.dtype).unsqueeze(-1)  # [N, 1]
    ratio = torch.exp(spec.log_ratio(logp, old, mask))  # [N, T]
    per_token = -_clipped_surrogate(ratio, adv, st.epsilon_low, st.epsilon_high, st.delta)  # [N, T]
    extra: dict[str, Tensor] = {}
    if sampler_logprobs is not None:
        extra = mismatch_sums(old, sampler_logprobs, mask)
        if st.tis_cap > 0:
            weights = tis_weights(old, sampler_logprobs, mask, st.tis_cap, st.tis_level)  # [N, T] detached
            per_token = per_token * weights  # [N, T]
            extra.update({"tis/weight_mean": weights.sum(), "tis/capped_frac": (mask & (weights >= st.tis_cap)).sum()})
        if st.is_mask != "none":
            keep = ratio_keep_mask(old, sampler_logprobs, mask, st.is_mask, st.is_mask_low, st.is_mask_high)  # [N, T]
            per_token = torch.where(keep, per_token, 0.0)  # [N, T]
            extra["is_mask/masked_frac"] = (mask & ~keep).sum()
    ent = None if entropies is None else torch.where(mask, entropies, 0.0)  # [N, T]
    if st.top_entropy_quantile < 1.0:
        per_token = torch.where(_high_entropy_tokens(ent, mask, st.top_entropy_quantile), per_token, 0.0)  # [N, T]
    kl = None
    if ref_logprobs is not None:
        ref = torch.where(mask, ref_logprobs, 0.0)  # [N, T]
        kl = kl_divergence(logp if st.beta > 0 else logp.detach(), ref, st.kl_estimator)  # [N, T]
        if st.beta > 0:
            per_token = per_token + st.beta * kl  # [N, T]
    if st.entropy_coef != 0.0:
        per_token = per_token - st.entropy_coef * ent  # [N, T]
    per_token = torch.where(mask, per_token, 0.0)  # [N, T]
    norm = Normalisers(
        num_sequences=logprobs.shape[0] if counts is None else counts.num_sequences,
        num_tokens=_at_least_one(mask.sum() if counts is None else counts.num_tokens),
        max_completion_length=st.max_completion_length,
    )
    loss = spec.aggregate(per_token, mask, norm)  # []
    metrics = _metrics(ratio, adv, mask, st.epsilon_low, st.epsilon_high, kl, ent)
    if extra:  # masked token means, one host sync
        metrics.update(zip(extra, (torch.stack(list(extra.values())).double() / mask.sum().clamp(min=1)).tolist()))
    return loss, metrics
