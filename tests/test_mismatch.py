"""Sampler-trainer mismatch metrics and truncated importance sampling against plain Python loops."""

import math

import pytest
import torch

from grpo.algo.loss import LossSettings, policy_loss
from grpo.algo.mismatch import mismatch_sums, ratio_keep_mask, tis_weights


def _case(seed=0, n=5, t=7):
    g = torch.Generator().manual_seed(seed)
    trainer = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3  # [N, T]
    sampler = trainer + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.5  # [N, T]
    lengths = torch.tensor([7, 3, 1, 5, 0])[:n]
    mask = torch.arange(t)[None, :] < lengths[:, None]  # [N, T]
    return trainer, sampler, mask


def _loop_tis(trainer, sampler, mask, cap, level):
    out = torch.zeros_like(trainer)
    for i in range(trainer.shape[0]):
        seq_ratio = math.prod(math.exp(trainer[i, j] - sampler[i, j]) for j in range(trainer.shape[1]) if mask[i, j])
        for j in range(trainer.shape[1]):
            if mask[i, j]:
                ratio = math.exp(trainer[i, j] - sampler[i, j]) if level == "token" else seq_ratio
                out[i, j] = min(ratio, cap)
    return out


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("cap", [0.5, 2.0, 1e6])
def test_tis_weights_match_loop(level, cap):
    trainer, sampler, mask = _case()
    got = tis_weights(trainer, sampler, mask, cap, level)
    torch.testing.assert_close(got, _loop_tis(trainer, sampler, mask, cap, level), rtol=1e-12, atol=1e-12)


def test_tis_weights_are_one_without_mismatch_and_never_overflow():
    trainer, _, mask = _case()
    assert torch.equal(tis_weights(trainer, trainer, mask, 2.0), mask.double())
    huge = tis_weights(trainer, trainer - 1000.0, mask, 3.0, "sequence")  # exp(7000) would overflow
    assert torch.isfinite(huge).all() and torch.equal(huge, 3.0 * mask.double())


def test_mismatch_sums_match_loop():
    trainer, sampler, mask = _case(seed=1)
    got = mismatch_sums(trainer, sampler, mask)
    pairs = [(float(trainer[i, j]), float(sampler[i, j])) for i, j in mask.nonzero().tolist()]
    assert got["mismatch/logprob_abs_diff"].item() == pytest.approx(sum(abs(a - b) for a, b in pairs), rel=1e-12)
    k3 = sum(math.exp(a - b) - (a - b) - 1 for a, b in pairs)
    assert got["mismatch/kl"].item() == pytest.approx(k3, rel=1e-10)
    same = mismatch_sums(trainer, trainer, mask)
    assert same["mismatch/kl"].item() == 0.0 and same["mismatch/logprob_abs_diff"].item() == 0.0


def test_bad_arguments_raise():
    trainer, sampler, mask = _case()
    with pytest.raises(ValueError, match="tis_cap"):
        tis_weights(trainer, sampler, mask, 0.0)
    with pytest.raises(ValueError, match="tis_level"):
        tis_weights(trainer, sampler, mask, 2.0, "batch")
    with pytest.raises(ValueError, match="one shape"):
        mismatch_sums(trainer, sampler[:, :3], mask)
    with pytest.raises(ValueError, match="sampler_logprobs"):
        policy_loss(trainer, None, torch.zeros(5, dtype=torch.float64), mask, LossSettings(tis_cap=2.0))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_policy_loss_with_tis_weights_each_token_of_the_surrogate(level):
    """Off-policy (old given), GRPO sequence-mean loss: loop reference of the weighted clipped surrogate,
    value and gradient."""
    trainer, sampler, mask = _case(seed=2)
    g = torch.Generator().manual_seed(3)
    logprobs = (trainer + torch.randn(trainer.shape, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    adv = torch.randn(trainer.shape[0], generator=g, dtype=torch.float64)
    cap = 1.5
    loss, metrics = policy_loss(
        logprobs, trainer, adv, mask, LossSettings(tis_cap=cap, tis_level=level), sampler_logprobs=sampler
    )
    w = _loop_tis(trainer, sampler, mask, cap, level)
    ref = 0.0
    for i in range(trainer.shape[0]):
        idx = [j for j in range(trainer.shape[1]) if mask[i, j]]
        terms = []
        for j in idx:
            r = torch.exp(logprobs[i, j] - trainer[i, j])
            terms.append(-w[i, j] * torch.min(r * adv[i], torch.clamp(r, 0.8, 1.2) * adv[i]))
        ref = ref + (sum(terms) / len(idx) if idx else 0.0)
    ref = ref / trainer.shape[0]
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, logprobs)
    (ref_grad,) = torch.autograd.grad(ref, logprobs)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    tokens = mask.sum().item()
    assert metrics["tis/weight_mean"] == pytest.approx(w[mask].sum().item() / tokens, rel=1e-9)
    assert metrics["tis/capped_frac"] == pytest.approx((w[mask] >= cap).sum().item() / tokens, rel=1e-9)


def test_on_policy_mismatch_is_against_the_trainers_own_logprobs():
    """old_logprobs None (on-policy): pi_old is logprobs.detach(), so the metrics compare it with the sampler's."""
    trainer, sampler, mask = _case(seed=4)
    adv = torch.randn(trainer.shape[0], dtype=torch.float64)
    plain, _ = policy_loss(trainer.clone().requires_grad_(), None, adv, mask)
    loss, metrics = policy_loss(trainer.clone().requires_grad_(), None, adv, mask, sampler_logprobs=sampler)
    torch.testing.assert_close(loss, plain)  # metrics only: the loss is unchanged without tis_cap
    sums = mismatch_sums(trainer, sampler, mask)
    assert metrics["mismatch/kl"] == pytest.approx(sums["mismatch/kl"].item() / mask.sum().item(), rel=1e-9)
    # no mismatch and TIS on: weights are 1 and the loss is the plain one
    same, m = policy_loss(
        trainer.clone().requires_grad_(), None, adv, mask, LossSettings(tis_cap=2.0), sampler_logprobs=trainer
    )
    torch.testing.assert_close(same, plain)
    assert m["mismatch/logprob_abs_diff"] == 0.0 and m["tis/weight_mean"] == pytest.approx(1.0)


def _ratios(rows):
    """``(trainer, sampler, mask)`` whose ratios pi_trainer / pi_sampler are ``rows`` (None = padding)."""
    width = max(len(r) for r in rows)
    ratio = torch.tensor(
        [[1.0 if v is None else v for v in r] + [1.0] * (width - len(r)) for r in rows], dtype=torch.float64
    )
    mask = torch.tensor([[v is not None for v in r] + [False] * (width - len(r)) for r in rows])
    sampler = torch.zeros_like(ratio)  # log-probs 0: the trainer's log-probs are the log ratios exactly
    return sampler + ratio.log(), sampler, mask


# Hand-computed, band [0.5, 2]: row 0 tokens 0.4 (out), 1.5, 3.0 (out); product 1.8, geometric mean 1.8^(1/3) = 1.22.
# Row 1: 1.5, 1.5 and padding: product 2.25 (out), geometric 1.5. Row 2: 0.3 three times: everything out.
ROWS = [[0.4, 1.5, 3.0], [1.5, 1.5, None], [0.3, 0.3, 0.3]]
KEPT = {
    "none": [[1, 1, 1], [1, 1, 0], [1, 1, 1]],
    "token": [[0, 1, 0], [1, 1, 0], [0, 0, 0]],
    "sequence": [[1, 1, 1], [0, 0, 0], [0, 0, 0]],
    "geometric": [[1, 1, 1], [1, 1, 0], [0, 0, 0]],
}


@pytest.mark.parametrize("mode", sorted(KEPT))
def test_ratio_masking_keeps_what_the_hand_computed_band_keeps(mode):
    trainer, sampler, mask = _ratios(ROWS)
    kept = ratio_keep_mask(trainer, sampler, mask, mode, 0.5, 2.0)
    assert kept.tolist() == [[bool(v) for v in row] for row in KEPT[mode]]


def test_ratio_masking_band_edges_are_kept_and_bad_settings_raise():
    trainer, sampler, mask = _ratios([[0.5, 2.0, 1.0]])
    assert ratio_keep_mask(trainer, sampler, mask, "token", 0.5, 2.0).all()  # closed band
    with pytest.raises(ValueError, match="is_mask"):
        ratio_keep_mask(trainer, sampler, mask, "tokens", 0.5, 2.0)
    with pytest.raises(ValueError, match="is_mask_low <= 1 <= is_mask_high"):
        ratio_keep_mask(trainer, sampler, mask, "token", 1.5, 2.0)
    for bad in (dict(is_mask="seq"), dict(is_mask_low=0.0), dict(is_mask_low=1.5), dict(is_mask_high=0.9)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LossSettings(**bad)


@pytest.mark.parametrize("loss_type, expected", [("grpo", -2.0 / 3.0), ("dapo", -4.0 / 6.0)])
def test_policy_loss_masks_the_policy_gradient_of_tokens_outside_the_band(loss_type, expected):
    """On-policy (ratio 1): each kept token contributes -A. Kept: row 0 tokens 0 and 2, row 1 token 2 (hand-set
    sampler log-probs); A = [1, 2]. grpo: (-1 * 2/3 - 2 * 1/3) / 2 = -2/3; dapo: (-1 * 2 - 2 * 1) / 6 = -4/6."""
    trainer, sampler, mask = _ratios([[1.0, 3.0, 1.0], [0.1, 2.5, 1.2]])
    logp = trainer.clone().requires_grad_(True)
    settings = LossSettings(loss_type=loss_type, is_mask="token")
    loss, metrics = policy_loss(
        logp, None, torch.tensor([1.0, 2.0], dtype=torch.float64), mask, settings, sampler_logprobs=sampler
    )
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-12)
    assert metrics["is_mask/masked_frac"] == pytest.approx(0.5)
    loss.backward()
    assert (logp.grad != 0).tolist() == [[True, False, True], [False, False, True]]  # masked tokens: no gradient
    with pytest.raises(ValueError, match="is_mask='token' needs sampler_logprobs"):
        policy_loss(trainer, None, torch.ones(2, dtype=torch.float64), mask, settings)


def test_ratio_masking_leaves_the_kl_term_alone():
    trainer, sampler, mask = _ratios([[1.0, 3.0, 1.0], [0.1, 2.5, 1.2]])
    ref = trainer - 0.3
    adv = torch.zeros(2, dtype=torch.float64)  # no policy-gradient term: only the KL remains
    plain, _ = policy_loss(trainer, None, adv, mask, LossSettings(beta=0.1), ref_logprobs=ref, sampler_logprobs=sampler)
    masked, _ = policy_loss(
        trainer, None, adv, mask, LossSettings(beta=0.1, is_mask="sequence"), ref_logprobs=ref, sampler_logprobs=sampler
    )
    assert float(masked) == pytest.approx(float(plain), abs=1e-15) and float(plain) > 0
