"""grpo.dynamic_sampling: informative groups kept first, the batch filled, rows still with their completions."""

import torch

from grpo.dynamic_sampling import keep_informative, sample_informative
from grpo.types import Rollout, ScoredRollout

G = 2


def scored_round(tag: str, group_rewards: list[list[float]], width: int) -> ScoredRollout:
    """B groups of G completions; completion ids encode (round, row) so their origin can be checked."""
    b, base = len(group_rewards), ord(tag[0]) * 100
    n = b * G
    ids = torch.tensor([[base + i] * width for i in range(n)])  # [N, T]
    rollout = Rollout(
        torch.ones(n, 1, dtype=torch.long),
        torch.ones(n, 1, dtype=torch.long),
        ids,
        torch.ones(n, width, dtype=torch.long),
        torch.zeros(n, dtype=torch.bool),
        [f"{tag}{i}" for i in range(n)],
    )
    rewards = torch.tensor([r for group in group_rewards for r in group])
    rows = [{"prompt": f"{tag}-prompt{j}"} for j in range(b)]
    return ScoredRollout(rows, rollout, rewards[:, None].clone(), rewards)


def test_informative_first_then_filled_in_sampling_order():
    first = scored_round("a", [[1, 1], [0, 1], [0, 0]], width=3)  # informative: group 1
    second = scored_round("b", [[1, 0], [2, 2], [0, 3]], width=5)  # informative: groups 0 and 2
    out = keep_informative([first, second], wanted=3, num_generations=G, pad_id=0)
    assert [r["prompt"] for r in out.rows] == ["a-prompt1", "b-prompt0", "b-prompt2"]
    assert out.rollout.completions == ["a2", "a3", "b0", "b1", "b4", "b5"]  # each row with its own completions
    assert out.rewards.tolist() == [0, 1, 1, 0, 0, 3] and out.per_func[:, 0].tolist() == out.rewards.tolist()
    assert out.rollout.completion_ids.shape == (6, 5) and out.rollout.completion_mask[:2].sum(1).tolist() == [3, 3]
    assert out.sampling_stats == {
        "dynamic_sampling/rounds": 2,
        "dynamic_sampling/dropped_groups": 3,
        "dynamic_sampling/filled_groups": 0,
    }


def test_short_batch_topped_up_with_dropped_groups():
    only = scored_round("a", [[1, 1], [0, 1], [0, 0]], width=2)
    out = keep_informative([only], wanted=3, num_generations=G, pad_id=0)
    assert [r["prompt"] for r in out.rows] == ["a-prompt1", "a-prompt0", "a-prompt2"]
    assert out.sampling_stats["dynamic_sampling/filled_groups"] == 2


def test_sampling_stops_when_enough_or_at_the_cap():
    rounds = iter(
        [scored_round("a", [[1, 1], [0, 1]], 2), scored_round("b", [[0, 1], [1, 1]], 2), scored_round("c", [[0, 1]], 2)]
    )
    out = sample_informative(lambda: next(rounds), G, max_rounds=5, pad_id=0)
    assert out.sampling_stats["dynamic_sampling/rounds"] == 2 and [r["prompt"] for r in out.rows] == [
        "a-prompt1",
        "b-prompt0",
    ]
    flat = iter([scored_round(t, [[1, 1], [2, 2]], 2) for t in "abc"])
    capped = sample_informative(lambda: next(flat), G, max_rounds=2, pad_id=0)
    assert capped.sampling_stats == {
        "dynamic_sampling/rounds": 2,
        "dynamic_sampling/dropped_groups": 4,
        "dynamic_sampling/filled_groups": 2,
    }
