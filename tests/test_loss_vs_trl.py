"""Agreement with trl 1.16's GRPOTrainer._compute_loss (loss, gradient and metrics) on fixed tensors.

trl's real `_compute_loss` runs unmodified on a GRPOTrainer made with `object.__new__` (no model, no
distributed state): we set exactly the attributes it reads and replace `_get_per_token_logps_and_entropies` on
the instance so it returns our fixed log-probs / entropies. Any attribute trl starts reading in a later version
fails loudly (AttributeError) rather than silently comparing something else.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from grpo.algo.advantages import group_advantages  # noqa: E402
from grpo.algo.loss import GlobalCounts, LossSettings, policy_loss  # noqa: E402

ATOL = 1e-10  # float64 throughout; the two implementations agree to rounding
DT = torch.float64

# our loss_type -> (trl loss_type, trl importance_sampling_level)
TRL_NAMES = {
    "grpo": ("grpo", "token"),
    "dapo": ("dapo", "token"),
    "dr_grpo": ("dr_grpo", "token"),
    "gspo": ("grpo", "sequence"),
}


class FakeAccelerator:
    """Single-process stand-in; `num_processes` only feeds trl's dapo normaliser."""

    is_main_process = True
    sync_gradients = True

    def __init__(self, num_processes=1):
        self.num_processes = num_processes

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


def make_trainer(
    loss_type,
    *,
    eps_low,
    eps_high,
    delta=None,
    beta=0.0,
    max_len=None,
    top_q=1.0,
    entropy_coef=0.0,
    gas=1,
    num_processes=1,
    steps_per_generation=1,
):
    trl_loss, level = TRL_NAMES[loss_type]
    t = object.__new__(GRPOTrainer)
    t.args = SimpleNamespace(delta=delta, use_bias_correction_kl=False, steps_per_generation=steps_per_generation)
    t.accelerator = FakeAccelerator(num_processes)
    t.model = SimpleNamespace(training=True)
    t.loss_type, t.importance_sampling_level = trl_loss, level
    t.epsilon_low, t.epsilon_high, t.beta = eps_low, eps_high, beta
    t.max_completion_length = max_len
    t.top_entropy_quantile = top_q
    t.entropy_coef, t.use_adaptive_entropy = entropy_coef, False
    t._entropy_bonus_enabled = entropy_coef != 0.0
    t.current_gradient_accumulation_steps = gas
    t.off_policy_mask_threshold = None
    t.aux_loss_enabled = False
    t.use_vllm, t.vllm_importance_sampling_correction = False, False
    t._metrics = defaultdict(lambda: defaultdict(list))
    return t


def make_batch(seed, n=12, T=9, off_policy=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).long()  # right padded, every sequence >= 1 token
    logp = -torch.rand(n, T, generator=g, dtype=DT) * 3  # finite everywhere (trl multiplies padding by 0)
    old = None
    if off_policy:
        old = logp + 0.3 * torch.randn(n, T, generator=g, dtype=DT)
        # planted rows, also at sequence level: 0 dual-clip region (A<0, r=e^1.5 > 3), 1 low clip, 2 high clip
        old[0], old[1], old[2] = logp[0] - 1.5, logp[1] + 1.0, logp[2] - 1.0
    ref = logp + 0.2 * torch.randn(n, T, generator=g, dtype=DT)
    adv = torch.randn(n, generator=g, dtype=DT)
    if off_policy:
        adv[:3] = adv[:3].abs() * torch.tensor([-1.0, -1.0, 1.0], dtype=DT)
    ent = torch.rand(n, T, generator=g, dtype=torch.float32).to(DT) * 2  # float32-exact (trl's quantile is f32)
    return SimpleNamespace(logp=logp, old=old, ref=ref, adv=adv, mask=mask, ent=ent)


def run_trl(trainer, b, num_items=None):
    logp = b.logp.clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logp, b.ent, None)
    n, T = b.logp.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, T, dtype=torch.long),
        "completion_mask": b.mask,
        "advantages": b.adv,
        "ref_per_token_logps": b.ref,
        "num_items_in_batch": torch.tensor(float(b.mask.sum() if num_items is None else num_items)),
    }
    if b.old is not None:
        inputs["old_per_token_logps"] = b.old
    loss = trainer._compute_loss(None, inputs)
    loss.backward()
    return loss.detach(), logp.grad, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def run_ours(loss_type, b, num_sequences=None, num_tokens=None, **settings):
    logp = b.logp.clone().requires_grad_(True)
    counts = None if num_tokens is None else GlobalCounts(num_sequences or b.mask.shape[0], num_tokens)
    loss, metrics = policy_loss(
        logp,
        b.old,
        b.adv,
        b.mask,
        LossSettings(loss_type=loss_type, **settings),
        ref_logprobs=b.ref,
        entropies=b.ent,
        counts=counts,
    )
    loss.backward()
    return loss.detach(), logp.grad, metrics


def _kept_tokens(b, top_q):
    """Independent top-rho entropy selection: torch.quantile over the masked entropies."""
    m = b.mask.bool()
    return m & (b.ent >= torch.quantile(b.ent[m], 1 - top_q))


CONFIGS = {
    "on_policy": dict(off_policy=False),
    "clip_higher": dict(eps=(0.2, 0.28)),
    "kl": dict(eps=(0.2, 0.28), beta=0.04),
    "dual_clip": dict(eps=(0.2, 0.28), delta=3.0),
    "top_entropy": dict(eps=(0.2, 0.28), beta=0.04, top_q=0.3),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("loss_type", sorted(TRL_NAMES))
def test_matches_trl(loss_type, config):
    cfg = CONFIGS[config]
    seed = 10 * sorted(TRL_NAMES).index(loss_type) + sorted(CONFIGS).index(config)
    b = make_batch(seed=seed, off_policy=cfg.get("off_policy", True))
    eps_low, eps_high = cfg.get("eps", (0.2, 0.2))
    if loss_type == "gspo" and "eps" in cfg:
        eps_low, eps_high = 3e-4, 4e-4  # GSPO's own ranges, so sequence ratios really get clipped
    opts = dict(delta=cfg.get("delta"), beta=cfg.get("beta", 0.0), top_q=cfg.get("top_q", 1.0))
    trainer = make_trainer(loss_type, eps_low=eps_low, eps_high=eps_high, max_len=b.mask.shape[1] + 3, **opts)
    t_loss, t_grad, t_metrics = run_trl(trainer, b)
    o_loss, o_grad, o_metrics = run_ours(
        loss_type,
        b,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        delta=opts["delta"],
        beta=opts["beta"],
        top_entropy_quantile=opts["top_q"],
        max_completion_length=b.mask.shape[1] + 3,
        num_tokens=int(b.mask.sum()),
    )
    torch.testing.assert_close(o_loss, t_loss, rtol=0, atol=ATOL)
    assert t_grad.abs().sum() > 0
    if loss_type == "gspo" and opts["top_q"] < 1:
        # Deliberate difference (see grpo/algo/loss.py, _sequence_log_ratio): trl multiplies the *sequence* loss by the
        # entropy mask, so the gradient of s_i still reaches every token of the sequence; GSPO-token puts it only
        # on the kept (high-entropy) tokens. Same loss, same per-sequence total gradient, different placement.
        kept, pad = _kept_tokens(b, opts["top_q"]), ~b.mask.bool()
        _, pg_grad, _ = run_ours(
            loss_type,
            b,
            epsilon_low=eps_low,
            epsilon_high=eps_high,
            top_entropy_quantile=opts["top_q"],
            num_tokens=int(b.mask.sum()),
        )  # no KL
        kl_grad = o_grad - pg_grad
        assert (pg_grad[~kept] == 0).all() and (pg_grad[kept] != 0).any()
        assert ((t_grad - kl_grad)[~kept & ~pad] != 0).any()  # trl: policy gradient on low-entropy tokens too
        torch.testing.assert_close(o_grad.sum(1), t_grad.sum(1), rtol=0, atol=ATOL)
    else:
        torch.testing.assert_close(o_grad, t_grad, rtol=0, atol=ATOL)
    if TRL_NAMES[loss_type][1] == "token":  # trl's sequence-level metrics are per-sequence means
        # trl averages the clip indicators in float32 (`.float()`), hence float32 resolution here
        assert o_metrics["clip_frac/low"] == pytest.approx(t_metrics["clip_ratio/low_mean"], abs=1e-7)
        assert o_metrics["clip_frac/high"] == pytest.approx(t_metrics["clip_ratio/high_mean"], abs=1e-7)
    assert o_metrics["entropy"] == pytest.approx(t_metrics["entropy"], abs=ATOL)
    if opts["beta"] > 0:
        assert o_metrics["kl"] == pytest.approx(t_metrics["kl"], abs=ATOL)
    if "eps" in cfg:  # the comparison exercised both clip branches
        ratio = torch.exp(b.logp - b.old)
        if loss_type == "gspo":
            m = b.mask.bool()
            ratio = torch.exp(torch.where(m, b.logp - b.old, 0).sum(1) / m.sum(1))[:, None].expand_as(ratio)
        assert ((ratio < 1 - eps_low) & (b.adv[:, None] < 0) & b.mask.bool()).any()
        assert ((ratio > 1 + eps_high) & (b.adv[:, None] > 0) & b.mask.bool()).any()
        if opts["delta"] is not None:
            assert ((ratio > opts["delta"]) & (b.adv[:, None] < 0) & b.mask.bool()).any()


def test_dapo_entropy_bonus_matches_trl():
    """For dapo on one full batch our per-token bonus (sum H / num_tokens) is trl's token-mean bonus."""
    b = make_batch(seed=7)
    trainer = make_trainer("dapo", eps_low=0.2, eps_high=0.28, entropy_coef=0.01)
    ent = b.ent.clone().requires_grad_(True)
    b_grad = SimpleNamespace(**{**vars(b), "ent": ent})
    t_loss, t_grad, _ = run_trl(trainer, b_grad)
    t_ent_grad, ent.grad = ent.grad.clone(), None
    o_loss, o_grad, _ = run_ours("dapo", b_grad, epsilon_low=0.2, epsilon_high=0.28, entropy_coef=0.01)
    torch.testing.assert_close(o_loss, t_loss, rtol=0, atol=ATOL)
    torch.testing.assert_close(o_grad, t_grad, rtol=0, atol=ATOL)
    torch.testing.assert_close(ent.grad, t_ent_grad, rtol=0, atol=ATOL)


@pytest.mark.parametrize("loss_type", sorted(TRL_NAMES))
def test_global_normalisers_match_trl_accumulation(loss_type):
    """2 processes x 2 accumulation steps: trl's micro-batch loss == world_size x ours with global normalisers.

    trl pre-scales for DDP's gradient averaging (dapo: num_items / num_processes; grpo, dr_grpo: local mean /
    accumulation steps); ours sums to the full-batch loss, so under DDP one multiplies by the world size.
    """
    procs, gas, n = 2, 2, 4
    full = make_batch(seed=11, n=procs * gas * n)
    max_len, total_tokens = full.mask.shape[1], int(full.mask.sum())
    ours_sum = 0.0
    for k in range(procs * gas):
        sl = slice(k * n, (k + 1) * n)
        b = SimpleNamespace(**{f: getattr(full, f)[sl] for f in ("logp", "old", "ref", "adv", "mask", "ent")})
        trainer = make_trainer(
            loss_type,
            eps_low=0.2,
            eps_high=0.28,
            beta=0.04,
            max_len=max_len,
            gas=gas,
            num_processes=procs,
            steps_per_generation=gas,
        )
        t_loss, t_grad, _ = run_trl(trainer, b, num_items=total_tokens)
        o_loss, o_grad, _ = run_ours(
            loss_type,
            b,
            epsilon_high=0.28,
            beta=0.04,
            max_completion_length=max_len,
            num_sequences=procs * gas * n,
            num_tokens=total_tokens,
        )
        torch.testing.assert_close(procs * o_loss, t_loss, rtol=0, atol=ATOL)
        torch.testing.assert_close(procs * o_grad, t_grad, rtol=0, atol=ATOL)
        ours_sum = ours_sum + o_loss
    whole, _, _ = run_ours(loss_type, full, epsilon_high=0.28, beta=0.04, max_completion_length=max_len)
    torch.testing.assert_close(ours_sum, whole, rtol=0, atol=ATOL)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl_formula(scale):
    """trl 1.16 `sum_then_normalize` advantages (nanmean / trl's nanstd / +1e-4 / nan_to_num), NaN rewards included.

    trl's nanstd computes Bessel's factor count / (count - 1) from int64 counts, i.e. in float32; the valid counts
    here (5, 3, 2, 1 per group; 17 in the batch) make that factor exact, so the comparison can stay at 1e-12.
    """
    g = torch.Generator().manual_seed(3)
    rewards = torch.randint(0, 3, (6 * 5,), generator=g).to(DT) + torch.rand(30, generator=g, dtype=DT)
    rewards[[5, 7]] = float("nan")  # group 1: 3 valid
    rewards[10:15] = 0.5  # group 2: constant
    rewards[[15, 16, 18, 19]] = float("nan")  # group 3: one valid member
    rewards[[20, 23, 24]] = float("nan")  # group 4: 2 valid
    rewards[[25, 26, 27, 29]] = float("nan")  # group 5: one valid member -> 17 valid in the batch
    grouped = rewards.view(-1, 5)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(5)
    std = nanstd(rewards).expand_as(rewards) if scale == "batch" else nanstd(grouped, dim=1).repeat_interleave(5)
    expected = rewards - mean
    if scale != "none":
        expected = expected / (std + 1e-4)
    expected = torch.nan_to_num(expected, nan=0.0)
    assert (~torch.isnan(rewards)).sum() == 17 and expected.abs().sum() > 0
    torch.testing.assert_close(group_advantages(rewards, 5, scale=scale), expected, rtol=0, atol=1e-12)
