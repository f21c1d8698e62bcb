"""grpo.algo.advantages: hand-computed cases, a naive Python reference on random data, and error handling."""

import math
import random

import pytest
import torch

from grpo.algo.advantages import SCALES, group_advantages, informative_groups, select_groups

NAN = float("nan")
DT = torch.float64


def t(values):
    return torch.tensor(values, dtype=DT)


def close(actual, expected, atol=1e-12):
    torch.testing.assert_close(actual, t(expected) if isinstance(expected, list) else expected, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------ hand-computed
def test_binary_group_unbiased_std_with_eps():
    # mean 0.5; unbiased var = 4 * 0.25 / 3 = 1/3; A = +-0.5 / (sqrt(1/3) + 1e-4)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    close(group_advantages(t([1, 0, 0, 1]), 4), [a, -a, -a, a])
    assert a == pytest.approx(0.8659, abs=1e-4)  # 0.8660 without eps; the eps shifts the 4th decimal
    assert abs(a - math.sqrt(3) / 2) > 1e-4  # ... and the biased std (0.5) would give exactly 1.0
    h = math.sqrt(3) / 2
    close(group_advantages(t([1, 0, 0, 1]), 4, eps=0.0), [h, -h, -h, h])


def test_constant_groups_are_exactly_zero():
    rewards = t([0.1, 0.1, 0.1, 3.0, 3.0, 3.0, 0.0, 1.0, 2.0])  # 0.1 * 3 / 3 != 0.1 in float: must still be 0
    for scale in SCALES:
        for eps in (1e-4, 0.0):
            adv = group_advantages(rewards, 3, scale=scale, eps=eps)
            assert (adv[:6] == 0).all() and not torch.isnan(adv).any()
            assert (adv[6:] != 0).sum() == 2  # the informative group is untouched
    # float32, where rounding of the mean divided by (0 + eps) would otherwise leave ~6e-4
    assert (group_advantages(torch.full((7,), 0.7), 7) == 0).all()


def test_nan_rewards_excluded_and_zero():
    # group [1, NaN, 0, 0]: valid mean 1/3, unbiased var ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3
    s = math.sqrt(1 / 3) + 1e-4
    close(group_advantages(t([1, NAN, 0, 0]), 4), [(2 / 3) / s, 0.0, (-1 / 3) / s, (-1 / 3) / s])
    close(group_advantages(t([1, NAN, 0, 0]), 4, scale="none"), [2 / 3, 0.0, -1 / 3, -1 / 3])
    # one valid member -> zero variance -> zeros; all NaN -> zeros (never NaN)
    close(group_advantages(t([NAN, 5.0, NAN, NAN, NAN, NAN]), 3), [0.0] * 6)
    close(group_advantages(t([NAN, 5.0, NAN, NAN, NAN, NAN]), 3, scale="batch"), [0.0] * 6)


def test_batch_scale_hand_computed():
    # group means 0.5, 0.75; batch mean 5/8; unbiased batch var = (5 * 0.375^2 + 3 * 0.625^2) / 7 = 1.875 / 7
    s = math.sqrt(1.875 / 7) + 1e-4
    expected = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.25 / s, 0.25 / s, 0.25 / s, -0.75 / s]
    close(group_advantages(t([1, 0, 0, 1, 1, 1, 1, 0]), 4, scale="batch"), expected)
    # NaN is left out of the batch std too: batch [1, 0, 0, 1, 1, NaN, 1, 0] has 7 valid, mean 4/7
    valid = [1, 0, 0, 1, 1, 1, 0]
    m = sum(valid) / 7
    s = math.sqrt(sum((v - m) ** 2 for v in valid) / 6) + 1e-4
    g2 = 2 / 3
    expected = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, (1 - g2) / s, 0.0, (1 - g2) / s, (0 - g2) / s]
    close(group_advantages(t([1, 0, 0, 1, 1, NAN, 1, 0]), 4, scale="batch"), expected)


def test_none_scale_hand_computed():
    close(group_advantages(t([1, 0, 0, 1, 3, 1, 2, 2]), 4, scale="none"), [0.5, -0.5, -0.5, 0.5, 1, -1, 0, 0])


def test_dtype_and_int_rewards():
    assert group_advantages(torch.tensor([1.0, 0.0], dtype=torch.float32), 2).dtype == torch.float32
    h = math.sqrt(3) / 2  # int rewards are promoted to the default dtype (float32): float32 resolution
    close(group_advantages(torch.tensor([1, 0, 0, 1]), 4, eps=0.0).to(DT), [h, -h, -h, h], atol=1e-7)


# ------------------------------------------------------------------------------------------ naive reference
def reference_advantages(rewards, G, scale, eps):
    """Independent plain-Python implementation of the spec."""
    r = rewards.tolist()
    out = [0.0] * len(r)

    def unbiased_std(vals):
        if len(vals) < 2:
            return 0.0
        m = sum(vals) / len(vals)
        return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))

    batch_std = unbiased_std([v for v in r if not math.isnan(v)])
    for start in range(0, len(r), G):
        vals = [v for v in r[start : start + G] if not math.isnan(v)]
        if len(vals) < 2 or max(vals) == min(vals):
            continue  # zero-variance group: all zeros
        m = sum(vals) / len(vals)
        denom = {"group": unbiased_std(vals) + eps, "batch": batch_std + eps, "none": 1.0}[scale]
        for i in range(start, start + G):
            if not math.isnan(r[i]):
                out[i] = (r[i] - m) / denom
    return torch.tensor(out, dtype=DT)


def random_rewards(rng, gen):
    G, B = rng.randint(1, 8), rng.randint(1, 6)
    kind = rng.choice(["binary", "continuous", "small_int"])
    if kind == "binary":
        r = torch.randint(0, 2, (B * G,), generator=gen).to(DT)
    elif kind == "small_int":
        r = torch.randint(0, 4, (B * G,), generator=gen).to(DT)
    else:
        r = torch.randn(B * G, generator=gen, dtype=DT) * 3
    r[torch.rand(B * G, generator=gen) < 0.2] = NAN
    return r, G


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_vectorised_matches_naive_reference(scale):
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(200):
        rewards, G = random_rewards(rng, gen)
        eps = rng.choice([1e-4, 1e-6, 0.0])
        close(group_advantages(rewards, G, scale=scale, eps=eps), reference_advantages(rewards, G, scale, eps))


def test_informative_groups_matches_naive_reference():
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    for _ in range(200):
        rewards, G = random_rewards(rng, gen)
        expected = []
        for start in range(0, rewards.numel(), G):
            vals = [v for v in rewards[start : start + G].tolist() if not math.isnan(v)]
            expected.append(len(vals) >= 2 and max(vals) != min(vals))
        assert informative_groups(rewards, G).tolist() == expected


# ------------------------------------------------------------------------------------------- DAPO helpers
def test_informative_groups_hand_cases():
    rewards = t([1, 1, 1, 0, 1, 0, 0, 0, NAN, 1, 1, NAN, NAN, 0, 1, NAN, NAN, NAN])
    assert informative_groups(rewards, 3).tolist() == [False, True, False, False, True, False]


def test_select_groups():
    keep = torch.tensor([True, False, True, True])
    assert select_groups(keep, 3).tolist() == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    assert select_groups(keep, 3, limit=2).tolist() == [0, 1, 2, 6, 7, 8]
    assert select_groups(keep, 3, limit=0).tolist() == []
    assert select_groups(torch.zeros(2, dtype=torch.bool), 4).tolist() == []
    # typical use: keep whole informative groups of a generation round
    rewards = t([1, 1, 0, 1, 1, 1])
    idx = select_groups(informative_groups(rewards, 3), 3)
    close(rewards[idx], [1, 1, 0])


# ------------------------------------------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(t([1, 0, 1]), 2)
    with pytest.raises(ValueError, match="divisible"):
        informative_groups(t([1, 0, 1]), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(t([1, 0]), 2, scale="std")
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(t([[1, 0]]), 2)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(t([1, 0]), 0)
    with pytest.raises(ValueError, match="bool"):
        select_groups(torch.tensor([1, 0]), 2)
    with pytest.raises(ValueError, match="limit"):
        select_groups(torch.tensor([True]), 2, limit=-1)
