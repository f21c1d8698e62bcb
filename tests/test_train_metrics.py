"""grpo.train_metrics: rollout statistics agree with the advantages they describe."""

import torch

from grpo.algo.advantages import group_advantages
from grpo.train_metrics import rollout_metrics

NAN = float("nan")


def metrics_of(rewards: list[float], g: int) -> dict:
    r = torch.tensor(rewards, dtype=torch.float32)
    n = len(rewards)
    return rollout_metrics(
        r, r[:, None], ["accuracy"], torch.full((n,), 5), torch.zeros(n, dtype=torch.bool), [""] * n, g
    )


def test_zero_std_frac_is_the_share_of_groups_with_zero_advantages():
    # groups: constant; differs by 1e-7 (std < 1e-6, yet its advantages are not 0); one valid reward; informative
    rewards = [0.5, 0.5, 0.5, 0.5 + 1e-7, 1.0, NAN, 0.0, 1.0]
    advantages = group_advantages(torch.tensor(rewards), 2).view(-1, 2)  # [B, G]
    all_zero = (advantages == 0).all(dim=1)  # [B]
    assert all_zero.tolist() == [True, False, True, False]
    assert metrics_of(rewards, 2)["zero_std_frac"] == float(all_zero.float().mean()) == 0.5


def test_zero_std_frac_hand_cases():
    assert metrics_of([1.0, 1.0, 1.0, 1.0], 2)["zero_std_frac"] == 1.0
    assert metrics_of([1.0, 0.0, 0.0, 1.0], 2)["zero_std_frac"] == 0.0
    assert metrics_of([1.0, 0.0, 0.0, 0.0], 4)["zero_std_frac"] == 0.0


def test_training_and_evaluation_name_lengths_alike():
    from grpo.eval.metrics import length_stats

    evaluation = {k for k in length_stats([3, 5], [1.0, 0.0], [False, True]) if k.startswith("completion_length/")}
    assert evaluation == {
        "completion_length/mean",
        "completion_length/correct_mean",
        "completion_length/incorrect_mean",
    }
    assert evaluation <= set(metrics_of([1.0, 0.0], 2))


def test_length_metrics_hand_computed():
    per_func = torch.tensor([[1.0], [0.0], [NAN], [1.0]])  # accuracy: correct, wrong, unverifiable, correct
    lengths, truncated = torch.tensor([4, 10, 6, 2]), torch.tensor([False, True, False, False])
    m = rollout_metrics(per_func[:, 0], per_func, ["accuracy"], lengths, truncated, [""] * 4, 2)
    assert m["completion_length/mean"] == 5.5 and m["completion_length/min"] == 2 and m["completion_length/max"] == 10
    assert m["completion_length/correct_mean"] == 3.0 and m["completion_length/incorrect_mean"] == 8.0
    assert m["tokens_per_correct"] == 11.0 and m["truncated_frac"] == 0.25
    other = rollout_metrics(per_func[:, 0], per_func, ["brevity"], lengths, truncated, [""] * 4, 2)
    assert other["completion_length/correct_mean"] is None and other["tokens_per_correct"] is None
    assert other["completion_length/mean"] == 5.5
