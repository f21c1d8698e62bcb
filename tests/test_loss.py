"""grpo.algo.loss: naive per-sequence reference, gradient identities, clipping, KL, padding, global normalisers."""

import math
import random
from types import SimpleNamespace

import pytest
import torch

from grpo.algo.loss import KL_ESTIMATORS, LOSS_TYPES, GlobalCounts, LossSettings, kl_divergence, policy_loss

DT = torch.float64
ATOL = 1e-12


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------- naive reference (loops)
def ref_kl(lp, rf, estimator):
    x = rf - lp  # log pi_ref / pi_theta
    return {"k1": -x, "k2": 0.5 * x * x, "k3": torch.exp(x) - x - 1}[estimator]


def ref_threshold(values, rho):
    """(1 - rho) quantile with linear interpolation, by hand."""
    v = sorted(values)
    pos = (1 - rho) * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def reference_loss(
    logp,
    old,
    adv,
    mask,
    loss_type,
    *,
    eps_low=0.2,
    eps_high=0.2,
    delta=None,
    ref=None,
    beta=0.0,
    kl_estimator="k3",
    max_len=None,
    num_sequences=None,
    num_tokens=None,
    ents=None,
    entropy_coef=0.0,
    top_q=1.0,
):
    """Loss written straight from the papers, one sequence and one token at a time (0-d tensors, autograd)."""
    N, T = logp.shape
    if old is None:
        old = logp.detach()
    rows = [[t for t in range(T) if mask[i, t]] for i in range(N)]
    n_seq = N if num_sequences is None else num_sequences
    n_tok = max(sum(len(r) for r in rows), 1) if num_tokens is None else num_tokens
    thr = None
    if top_q < 1:
        thr = ref_threshold([ents[i, t].item() for i in range(N) for t in rows[i]], top_q)
    total = 0.0
    for i in range(N):
        A = adv[i]
        if loss_type == "gspo" and rows[i]:  # GSPO eq. 5/7: one sequence ratio, gradient through all tokens
            s = torch.exp(sum(logp[i, t] - old[i, t] for t in rows[i]) / len(rows[i]))
        seq_sum = 0.0
        for t in rows[i]:
            r = s if loss_type == "gspo" else torch.exp(logp[i, t] - old[i, t])
            surr = torch.minimum(r * A, torch.clamp(r, 1 - eps_low, 1 + eps_high) * A)
            if delta is not None and A < 0:
                surr = torch.maximum(surr, delta * A)
            tok = -surr
            if thr is not None and ents[i, t].item() < thr:
                tok = 0.0 * tok
            if beta > 0:
                tok = tok + beta * ref_kl(logp[i, t], ref[i, t], kl_estimator)
            if entropy_coef:
                tok = tok - entropy_coef * ents[i, t]
            seq_sum = seq_sum + tok
        if loss_type in ("grpo", "gspo"):
            total = total + (seq_sum / len(rows[i]) if rows[i] else 0.0) / n_seq
        elif loss_type == "dapo":
            total = total + seq_sum / n_tok
        else:  # dr_grpo
            total = total + seq_sum / (max_len * n_seq)
    return total


# ------------------------------------------------------------------------------------------- random batches
def random_batch(seed, off_policy=True):
    """Random N = B * G (random group size), T, ragged masks (some empty rows), garbage-free."""
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    G, B, T = rng.randint(2, 5), rng.randint(2, 4), rng.randint(3, 8)
    N = B * G
    mask = torch.rand(N, T, generator=g) < 0.7
    mask[rng.randrange(N)] = False  # an empty completion
    logp = -torch.rand(N, T, generator=g, dtype=DT) * 3
    old = logp + 0.35 * torch.randn(N, T, generator=g, dtype=DT) if off_policy else None
    if off_policy:
        old[0] = logp[0] - 1.6  # ratios e^1.6 ~ 5: beyond a dual clip at 3
    return SimpleNamespace(
        logp=logp,
        old=old,
        mask=mask,
        adv=torch.randn(N, generator=g, dtype=DT),
        ref=logp + 0.3 * torch.randn(N, T, generator=g, dtype=DT),
        ents=torch.rand(N, T, generator=g, dtype=DT) * 2,
        max_len=T + 2,
    )


def grads_of(fn, b):
    logp = b.logp.clone().requires_grad_(True)
    ents = b.ents.clone().requires_grad_(True)
    loss = fn(logp, ents)
    loss.backward()
    return loss.detach(), logp.grad, ents.grad


CONFIGS = {
    "on_policy": dict(off_policy=False),
    "clip": dict(),
    "clip_higher": dict(eps_high=0.28),
    "dual_clip": dict(eps_high=0.28, delta=3.0),
    "kl_k1": dict(beta=0.05, kl_estimator="k1"),
    "kl_k2": dict(beta=0.05, kl_estimator="k2"),
    "kl_k3": dict(beta=0.05, kl_estimator="k3", eps_high=0.28),
    "entropy_bonus": dict(entropy_coef=0.01, beta=0.02),
    "top_entropy": dict(top_q=0.4, beta=0.02),
}


# gspo + entropy mask is left to test_gspo_token_form_with_entropy_mask: the reference below uses GSPO's plain
# sequence objective, whose gradient placement differs from GSPO-token once tokens are masked individually.
REFERENCE_CASES = [(lt, c) for lt in sorted(LOSS_TYPES) for c in sorted(CONFIGS) if (lt, c) != ("gspo", "top_entropy")]


@pytest.mark.parametrize("loss_type, config", REFERENCE_CASES)
def test_matches_naive_reference(loss_type, config):
    cfg = dict(CONFIGS[config])
    off_policy = cfg.pop("off_policy", True)
    grad_norm = 0.0
    for seed in range(3):
        b = random_batch(100 * seed + len(config), off_policy=off_policy)
        kw = dict(eps_low=0.2, **cfg)
        ours = grads_of(
            lambda lp, en: policy_loss(
                lp,
                b.old,
                b.adv,
                b.mask,
                LossSettings(
                    loss_type=loss_type,
                    epsilon_low=kw["eps_low"],
                    epsilon_high=kw.get("eps_high", 0.2),
                    delta=kw.get("delta"),
                    beta=kw.get("beta", 0.0),
                    kl_estimator=kw.get("kl_estimator", "k3"),
                    max_completion_length=b.max_len,
                    entropy_coef=kw.get("entropy_coef", 0.0),
                    top_entropy_quantile=kw.get("top_q", 1.0),
                ),
                ref_logprobs=b.ref,
                entropies=en,
            )[0],
            b,
        )
        expected = grads_of(
            lambda lp, en: reference_loss(
                lp, b.old, b.adv, b.mask, loss_type, ref=b.ref, max_len=b.max_len, ents=en, **kw
            ),
            b,
        )
        for o, e in zip(ours, expected):
            close(o, e)
        grad_norm += ours[1].abs().sum().item()
    assert grad_norm > 0  # not everything was clipped away


def aggregate_like(loss_type, per_token, mask, max_len):
    """-(logp * A) style per-token values aggregated by loss type (for the REINFORCE identity)."""
    per_token = torch.where(mask, per_token, 0.0)
    lengths = mask.sum(-1).clamp(min=1)
    if loss_type in ("grpo", "gspo"):
        return (per_token.sum(-1) / lengths).mean()
    if loss_type == "dapo":
        return per_token.sum() / mask.sum()
    return per_token.sum() / (max_len * mask.shape[0])


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_on_policy_gradient_is_reinforce(loss_type):
    """old=None: ratio 1, and grad of the clipped loss == grad of -(logp * A) aggregated the same way."""
    b = random_batch(5, off_policy=False)
    lp1 = b.logp.clone().requires_grad_(True)
    loss, metrics = policy_loss(
        lp1, None, b.adv, b.mask, LossSettings(loss_type=loss_type, max_completion_length=b.max_len)
    )
    loss.backward()
    lp2 = b.logp.clone().requires_grad_(True)
    reinforce = aggregate_like(loss_type, -lp2 * b.adv[:, None], b.mask, b.max_len)
    reinforce.backward()
    close(lp1.grad, lp2.grad)
    close(loss.detach(), aggregate_like(loss_type, -b.adv[:, None].expand_as(b.logp), b.mask, b.max_len))
    assert metrics["ratio/mean"] == 1.0 and metrics["clip_frac/low"] == metrics["clip_frac/high"] == 0.0


# -------------------------------------------------------------------------------------- clipping (constructed)
def one_row(ratios, advs):
    """N sequences of one token each, with ratio r_i and advantage A_i."""
    logp = torch.zeros(len(ratios), 1, dtype=DT, requires_grad=True)
    old = -torch.log(torch.tensor(ratios, dtype=DT))[:, None]
    return logp, old, torch.tensor(advs, dtype=DT), torch.ones(len(ratios), 1, dtype=torch.bool)


def test_clip_higher_moves_only_the_upper_bound():
    ratios, advs = [1.25, 0.75, 1.25, 0.75, 1.1], [1.0, -1.0, -1.0, 1.0, 1.0]
    results = {}
    for eps_high in (0.2, 0.28):
        logp, old, adv, mask = one_row(ratios, advs)
        loss, m = policy_loss(
            logp, old, adv, mask, LossSettings(loss_type="dapo", epsilon_low=0.2, epsilon_high=eps_high)
        )
        loss.backward()
        results[eps_high] = (loss.item(), logp.grad[:, 0].tolist(), m)
    (l_sym, g_sym, m_sym), (l_hi, g_hi, m_hi) = results[0.2], results[0.28]
    # symmetric: token 0 (r=1.25 > 1.2, A>0) and token 1 (r=0.75 < 0.8, A<0) are clipped -> zero gradient
    assert g_sym[0] == 0 and g_sym[1] == 0 and all(g != 0 for g in g_sym[2:])
    # clip-higher: token 0 is inside [0.8, 1.28] now; token 1 is still clipped below
    assert g_hi[0] == pytest.approx(-1.25 / 5, abs=1e-15) and g_hi[1] == 0
    assert g_hi[2:] == g_sym[2:]
    assert m_sym["clip_frac/high"] == pytest.approx(1 / 5) and m_hi["clip_frac/high"] == 0.0
    assert m_sym["clip_frac/low"] == m_hi["clip_frac/low"] == pytest.approx(1 / 5)
    # loss: -(1/5) * sum_i surrogate_i
    assert l_sym == pytest.approx(-(1.2 - 0.8 - 1.25 + 0.75 + 1.1) / 5, abs=1e-15)
    assert l_hi == pytest.approx(-(1.25 - 0.8 - 1.25 + 0.75 + 1.1) / 5, abs=1e-15)


def test_dual_clip():
    ratios, advs = [5.0, 2.0, 5.0, 0.5], [-1.0, -1.0, 1.0, -1.0]
    out = {}
    for delta in (None, 3.0):
        logp, old, adv, mask = one_row(ratios, advs)
        loss, _ = policy_loss(logp, old, adv, mask, LossSettings(loss_type="dapo", epsilon_high=0.28, delta=delta))
        loss.backward()
        out[delta] = (loss.item(), logp.grad[:, 0].tolist())
    # no dual clip: A<0, r=5 -> surrogate 5 * A = -5, gradient -r*A/4 = 1.25
    assert out[None][1][0] == pytest.approx(5 / 4, abs=1e-15)
    # dual clip: max(-5, 3 * -1) = -3, constant -> gradient 0; the other tokens are unchanged
    assert out[3.0][1][0] == 0 and out[3.0][1][1:] == out[None][1][1:]
    assert out[3.0][0] - out[None][0] == pytest.approx((3 - 5) / 4, abs=1e-15)
    with pytest.raises(ValueError, match="delta"):
        policy_loss(*one_row([1.0], [1.0]), LossSettings(delta=1.0))


# ------------------------------------------------------------------------------------------------------ KL
def test_kl_closed_forms():
    lp, rf = torch.tensor([-1.0, -2.0, -0.7], dtype=DT), torch.tensor([-1.5, -1.0, -0.7], dtype=DT)
    close(kl_divergence(lp, rf, "k1"), torch.tensor([0.5, -1.0, 0.0], dtype=DT))
    close(kl_divergence(lp, rf, "k2"), torch.tensor([0.125, 0.5, 0.0], dtype=DT))
    close(kl_divergence(lp, rf, "k3"), torch.tensor([math.exp(-0.5) + 0.5 - 1, math.exp(1) - 2, 0.0], dtype=DT))
    x = torch.linspace(-20, 5, 2001, dtype=DT)
    k3 = kl_divergence(torch.zeros_like(x), x, "k3")
    assert (k3[x != 0] > 0).all() and (k3[x == 0] == 0).all()
    assert (kl_divergence(x, x.clone(), "k3") == 0).all()
    for small in (1e-9, -1e-9, 1e-6):  # accurate near 0: x^2 / 2
        v = kl_divergence(torch.zeros(1, dtype=DT), torch.full((1,), small, dtype=DT), "k3").item()
        assert v == pytest.approx(small**2 / 2, rel=1e-6)


def test_kl_estimators_unbiased_in_expectation():
    """E_{y~p}[k1] = E_{y~p}[k3] = KL(p || q) exactly on a categorical; k2 is biased (Schulman 2020)."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, generator=g, dtype=DT), 0)
    logq = torch.log_softmax(torch.randn(7, generator=g, dtype=DT), 0)
    exact = (logp.exp() * (logp - logq)).sum()
    for est in ("k1", "k3"):
        close((logp.exp() * kl_divergence(logp, logq, est)).sum(), exact)
    assert abs((logp.exp() * kl_divergence(logp, logq, "k2")).sum() - exact) > 1e-3


def test_kl_metric_and_errors():
    b = random_batch(3)
    _, m = policy_loss(b.logp, b.old, b.adv, b.mask)
    assert m["kl"] == 0.0 and "entropy" not in m
    _, m = policy_loss(b.logp, b.old, b.adv, b.mask, LossSettings(kl_estimator="k2"), ref_logprobs=b.ref)
    expected = (0.5 * (b.logp - b.ref) ** 2)[b.mask].mean().item()
    assert m["kl"] == pytest.approx(expected, abs=1e-14)
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_divergence(b.logp, b.ref, "k4")
    with pytest.raises(ValueError, match="kl_estimator"):
        policy_loss(b.logp, b.old, b.adv, b.mask, LossSettings(beta=0.1, kl_estimator="k4"), ref_logprobs=b.ref)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(b.logp, b.old, b.adv, b.mask, LossSettings(beta=0.1))
    assert sorted(KL_ESTIMATORS) == ["k1", "k2", "k3"]


# ---------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_padding_garbage_changes_nothing(loss_type):
    b = random_batch(9)
    pad = ~b.mask
    garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30], dtype=DT)
    junk = garbage[torch.arange(pad.sum()) % 5]

    def dirty(x):
        x = x.clone()
        x[pad] = junk
        return x

    settings = LossSettings(
        loss_type=loss_type,
        max_completion_length=b.max_len,
        beta=0.1,
        epsilon_high=0.28,
        delta=3.0,
        entropy_coef=0.01,
        top_entropy_quantile=0.5,
    )
    runs = []
    for clean in (True, False):
        f = (lambda x: x.clone()) if clean else dirty
        lp, en = f(b.logp).requires_grad_(True), f(b.ents).requires_grad_(True)
        loss, m = policy_loss(lp, f(b.old), b.adv, b.mask, settings, ref_logprobs=f(b.ref), entropies=en)
        loss.backward()
        runs.append((loss.detach(), lp.grad, en.grad, m))
    (l0, g0, e0, m0), (l1, g1, e1, m1) = runs
    assert torch.isfinite(l1) and torch.isfinite(g1).all() and torch.isfinite(e1).all()
    torch.testing.assert_close((l1, g1, e1), (l0, g0, e0), rtol=0, atol=0)
    assert m0 == m1 and (g1[pad] == 0).all()


# ------------------------------------------------------------------------------ global normalisers / invariance
def full_and_split(loss_type, b, chunks, normalise):
    """Loss and grad on the full batch vs over row chunks (micro-batches / shards), with KL.

    normalise=True: global normalisers, losses summed. False (negative control): each chunk normalised on its
    own, then the chunk losses averaged (the naive gradient-accumulation recipe).
    """
    settings = LossSettings(loss_type=loss_type, max_completion_length=b.max_len, beta=0.05, epsilon_high=0.28)
    lp = b.logp.clone().requires_grad_(True)
    full, _ = policy_loss(lp, b.old, b.adv, b.mask, settings, ref_logprobs=b.ref)
    full.backward()
    counts = GlobalCounts(num_sequences=b.mask.shape[0], num_tokens=int(b.mask.sum())) if normalise else None
    lp_split = b.logp.clone().requires_grad_(True)
    losses = []
    for sl in chunks:
        loss, _ = policy_loss(
            lp_split[sl], b.old[sl], b.adv[sl], b.mask[sl], settings, ref_logprobs=b.ref[sl], counts=counts
        )
        loss = loss if normalise else loss / len(chunks)
        loss.backward()  # gradient accumulation into the same leaf
        losses.append(loss.detach())
    return full.detach(), lp.grad, sum(losses), lp_split.grad


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_global_normalisers_make_split_exact(loss_type):
    b = random_batch(21)
    b.mask[b.mask.shape[0] // 2 :, 3:] = False  # lengths differ a lot between the halves
    N = b.mask.shape[0]
    half = N // 2
    # 2 data-parallel shards, each with uneven gradient-accumulation micro-batches
    chunks = [slice(0, 1), slice(1, half), slice(half, N - 1), slice(N - 1, N)]
    full, g_full, total, g_split = full_and_split(loss_type, b, chunks, normalise=True)
    close(total, full)
    close(g_split, g_full)
    # negative control: each micro-batch normalised on its own, then averaged
    _, _, naive, g_naive = full_and_split(loss_type, b, chunks, normalise=False)
    assert abs(naive - full) > 1e-3 and (g_naive - g_full).abs().max() > 1e-3


# -------------------------------------------------------------------------------------------- entropy
def test_top_entropy_quantile_hand_case():
    logp = torch.full((1, 4), -1.0, dtype=DT, requires_grad=True)
    ents = torch.tensor([[0.1, 0.5, 0.9, 0.3]], dtype=DT)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=DT)  # float mask works too
    # rho = 0.5: threshold = median of [0.1, 0.3, 0.5, 0.9] = 0.4 -> tokens 1 and 2 keep the policy gradient
    loss, m = policy_loss(
        logp, None, torch.tensor([2.0], dtype=DT), mask, LossSettings(top_entropy_quantile=0.5), entropies=ents
    )
    loss.backward()
    close(logp.grad, torch.tensor([[0.0, -0.5, -0.5, 0.0]], dtype=DT))
    assert loss.item() == pytest.approx(-1.0, abs=1e-15) and m["entropy"] == pytest.approx(0.45, abs=1e-15)
    # rho = 0 keeps only the highest-entropy token (as in trl)
    logp.grad = None
    policy_loss(
        logp, None, torch.tensor([2.0], dtype=DT), mask, LossSettings(top_entropy_quantile=0.0), entropies=ents
    )[0].backward()
    close(logp.grad, torch.tensor([[0.0, 0.0, -0.5, 0.0]], dtype=DT))


def test_entropy_bonus_gradient():
    b = random_batch(4)
    ents = b.ents.clone().requires_grad_(True)
    policy_loss(b.logp, b.old, b.adv, b.mask, LossSettings(entropy_coef=0.1), entropies=ents)[0].backward()
    lengths = b.mask.sum(-1, keepdim=True).clamp(min=1).to(DT)
    expected = torch.where(b.mask, -0.1 / lengths / b.mask.shape[0], 0.0)
    close(ents.grad, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_gspo_token_form_with_entropy_mask(seed):
    """GSPO-token: value = sequence objective; policy gradient only on kept tokens; per-sequence total as eq. 5."""
    b = random_batch(seed + 40)
    settings = LossSettings(loss_type="gspo", epsilon_low=3e-4, epsilon_high=4e-4, top_entropy_quantile=0.5)
    lp = b.logp.clone().requires_grad_(True)
    loss, m = policy_loss(lp, b.old, b.adv, b.mask, settings, entropies=b.ents)
    loss.backward()
    vals = b.ents[b.mask]
    kept = b.mask & (b.ents >= torch.quantile(vals, 0.5))
    assert (lp.grad[~kept] == 0).all()
    # reference: sequence objective times the kept share of the sequence's tokens (value and per-row grad sum)
    lp2 = b.logp.clone().requires_grad_(True)
    lengths = b.mask.sum(-1).clamp(min=1)
    s = torch.exp(torch.where(b.mask, lp2 - b.old, 0.0).sum(-1) / lengths)
    surr = torch.minimum(s * b.adv, torch.clamp(s, 1 - 3e-4, 1 + 4e-4) * b.adv)
    expected = (-surr * kept.sum(-1) / lengths).mean()
    expected.backward()
    close(loss.detach(), expected.detach())
    close(lp.grad.sum(-1), lp2.grad.sum(-1))
    ratio = torch.where(b.mask, s.detach()[:, None], 0.0).sum() / b.mask.sum()
    assert m["ratio/mean"] == pytest.approx(ratio.item(), abs=1e-14)


# --------------------------------------------------------------------------------------- metrics & errors
def test_metrics_hand_case():
    logp, old, adv, mask = one_row([1.5, 0.5, 1.0, 0.7], [1.0, -1.0, 1.0, 1.0])
    ents = torch.tensor([[0.2], [0.4], [0.6], [0.8]], dtype=DT)
    _, m = policy_loss(logp, old, adv, mask, entropies=ents)
    assert m == pytest.approx(
        {"kl": 0.0, "clip_frac/low": 0.25, "clip_frac/high": 0.25, "ratio/mean": 0.925, "entropy": 0.5}, abs=1e-15
    )
    assert all(type(v) is float for v in m.values())


def test_bool_and_float_masks_agree():
    b = random_batch(8)
    a, ma = policy_loss(b.logp, b.old, b.adv, b.mask, LossSettings(loss_type="dapo"))
    f, mf = policy_loss(b.logp, b.old, b.adv, b.mask.to(DT), LossSettings(loss_type="dapo"))
    close(a, f)
    assert ma == mf


def test_errors():
    b = random_batch(2)
    args = (b.logp, b.old, b.adv, b.mask)
    cases = [  # (settings, tensors and counts, error)
        (dict(loss_type="ppo"), {}, "loss_type"),
        (dict(loss_type="dr_grpo"), {}, "max_completion_length"),
        (dict(beta=-0.1), {}, "beta"),
        (dict(epsilon_low=1.0), {}, "epsilon"),
        (dict(top_entropy_quantile=1.5), dict(entropies=b.ents), "top_entropy_quantile"),
        (dict(top_entropy_quantile=0.5), {}, "entropies"),
        (dict(entropy_coef=0.1), {}, "entropies"),
        (dict(beta=0.1), dict(ref_logprobs=b.ref[:, :-1]), "shape"),
        ({}, dict(entropies=b.ents[:-1]), "shape"),
        ({}, dict(counts=GlobalCounts(num_sequences=0, num_tokens=5)), "num_sequences"),
        ({}, dict(counts=GlobalCounts(num_sequences=2, num_tokens=-1)), "num_tokens"),
        (dict(loss_type="dr_grpo", max_completion_length=0), {}, "max_completion_length"),
    ]
    for settings, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            policy_loss(*args, LossSettings(**settings), **kw)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(b.logp, b.old, b.adv[:, None], b.mask)
    with pytest.raises(ValueError, match="completion_mask"):
        policy_loss(b.logp, b.old, b.adv, b.mask[:, :-1])
    with pytest.raises(ValueError, match="old_logprobs"):
        policy_loss(b.logp, b.old[:, :-1], b.adv, b.mask)
    with pytest.raises(ValueError, match="logprobs must be"):
        policy_loss(b.logp[0], None, b.adv[:1], b.mask[0])


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_fully_masked_batch_gives_zero(loss_type):
    """Every completion masked (e.g. all truncated): loss 0 and zero gradient, never NaN, also with num_tokens=0."""
    b = random_batch(6)
    b.mask[:] = False
    for num_tokens in (None, 0):
        lp = b.logp.clone().requires_grad_(True)
        loss, m = policy_loss(
            lp,
            b.old,
            b.adv,
            b.mask,
            LossSettings(
                loss_type=loss_type,
                max_completion_length=b.max_len,
                beta=0.1,
                entropy_coef=0.01,
                top_entropy_quantile=0.2,
            ),
            ref_logprobs=b.ref,
            entropies=b.ents,
            counts=None if num_tokens is None else GlobalCounts(lp.shape[0], num_tokens),
        )
        loss.backward()
        assert loss.item() == 0.0 and (lp.grad == 0).all()
        assert m == {"kl": 0.0, "clip_frac/low": 0.0, "clip_frac/high": 0.0, "ratio/mean": 0.0, "entropy": 0.0}


def test_algo_is_pure_torch():
    """grpo.algo imports alone: no transformers, accelerate, trl, vLLM or grpo module outside algo."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, grpo.algo.loss, grpo.algo.advantages, grpo.algo.mismatch\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'accelerate', 'trl', 'vllm', "
        "'rewards') or (m.startswith('grpo.') and not m.startswith('grpo.algo')))\n"
        "assert not bad, bad\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_loss_settings_frozen_and_checked_once():
    settings = LossSettings(loss_type="dapo", beta=0.04)
    with pytest.raises(AttributeError):
        settings.beta = 0.1  # frozen: checked at construction, never changed after
    from grpo.config import GRPOArguments

    args = GRPOArguments(loss_type="dr_grpo", epsilon_high=0.28, delta=2.0, tis_cap=2.0, top_entropy_quantile=0.5)
    built = args.loss_settings()
    assert built == LossSettings(
        loss_type="dr_grpo",
        epsilon_high=0.28,
        delta=2.0,
        max_completion_length=args.max_completion_length,
        tis_cap=2.0,
        top_entropy_quantile=0.5,
    )
    with pytest.raises(ValueError, match="^delta must be > 1"):
        GRPOArguments(delta=1.0)  # the configuration reports the loss's own rule
