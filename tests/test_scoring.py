"""grpo.scoring: the reward inputs that training and evaluation build alike, and the weighted sum."""

import math

import torch

from grpo.scoring import combine_rewards, completion_id_lists, reward_columns, rollout_reward_columns
from grpo.types import Rollout


def rollout_of(completion_ids, completion_mask, truncated):
    n = len(completion_ids)
    return Rollout(
        torch.ones(n, 2, dtype=torch.long),
        torch.ones(n, 2, dtype=torch.long),
        torch.tensor(completion_ids),
        torch.tensor(completion_mask),
        torch.tensor(truncated),
        [f"c{i}" for i in range(n)],
    )


def test_rollout_reward_columns_hand_built():
    rows = [
        {"prompt": "p0", "prompt_ids": [1], "solution": "3", "problem": "1+2"},
        {"prompt": "p1", "prompt_ids": [2], "solution": "8", "problem": "4+4"},
    ]
    rollout = rollout_of(
        [[5, 6, 0], [7, 0, 0], [8, 9, 2], [4, 0, 0]],
        [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]],
        [False, False, True, False],
    )
    assert completion_id_lists(rollout) == [[5, 6], [7], [8, 9, 2], [4, 0]]  # padding gone, a real 0 token kept
    columns = rollout_reward_columns(rows, rollout, 2)
    assert set(columns) == {"prompts", "solution", "problem", "completion_ids", "truncated"}
    assert columns["prompts"] == ["p0", "p0", "p1", "p1"] and columns["solution"] == ["3", "3", "8", "8"]
    assert columns["completion_ids"][2] == [8, 9, 2] and columns["truncated"] == [False, False, True, False]


def test_reward_columns_skip_and_missing_fields():
    rows = [{"prompt": "p", "benchmark": "b", "level": 3}, {"prompt": "q", "benchmark": "b"}]
    columns = reward_columns(rows, [[1], [2]], [False, True], skip=("prompt", "benchmark"))
    assert columns == {
        "level": [3, None],
        "prompts": ["p", "q"],
        "completion_ids": [[1], [2]],
        "truncated": [False, True],
    }


def test_combine_rewards_skips_unverifiable():
    per_func = torch.tensor([[1.0, 0.5], [math.nan, 1.0], [math.nan, math.nan]])
    total = combine_rewards(per_func, torch.tensor([2.0, 1.0]))
    assert total[:2].tolist() == [2.5, 1.0] and math.isnan(total[2])
