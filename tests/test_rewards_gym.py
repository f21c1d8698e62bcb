"""reasoning_gym reward on real generated entries."""

import json

import pytest
import reasoning_gym

from rewards import reasoning_gym_reward


@pytest.fixture(scope="module")
def arithmetic():
    return list(reasoning_gym.create_dataset("basic_arithmetic", size=4, seed=7))


@pytest.fixture(scope="module")
def countdown():
    return list(reasoning_gym.create_dataset("countdown", size=3, seed=11))


def _wrong_number(answer: str) -> str:
    return str(float(answer) + 1)


def test_basic_arithmetic_right_and_wrong(arithmetic):
    right = [f"<think>\ncompute\n</think>\n<answer>{e['answer']}</answer>" for e in arithmetic]
    wrong = [f"<answer>{_wrong_number(e['answer'])}</answer>" for e in arithmetic]
    scores_right = reasoning_gym_reward(right, reasoning_gym_entry=arithmetic)
    scores_wrong = reasoning_gym_reward(wrong, reasoning_gym_entry=arithmetic)
    assert scores_right == [1.0] * len(arithmetic)
    assert all(w < 1.0 for w in scores_wrong)


def test_countdown_right_and_wrong(countdown):
    right = [f"<answer>{e['answer']}</answer>" for e in countdown]
    # every number used once, but the sum is not the target
    assert all(sum(e["metadata"]["numbers"]) != e["metadata"]["target"] for e in countdown)
    wrong = [f"<answer>{' + '.join(str(n) for n in e['metadata']['numbers'])}</answer>" for e in countdown]
    scores_right = reasoning_gym_reward(right, reasoning_gym_entry=countdown)
    scores_wrong = reasoning_gym_reward(wrong, reasoning_gym_entry=countdown)
    assert scores_right == [1.0] * len(countdown)
    assert all(w < 1.0 for w in scores_wrong)


def test_answer_without_tags_uses_whole_completion(arithmetic):
    e = arithmetic[0]
    assert reasoning_gym_reward([f"  {e['answer']}\n"], reasoning_gym_entry=[e]) == [1.0]
    assert reasoning_gym_reward([f"the result is {e['answer']}"], reasoning_gym_entry=[e])[0] < 1.0


def test_none_entry_json_entry_and_mixed_tasks(arithmetic, countdown):
    a, c = arithmetic[1], countdown[1]
    out = reasoning_gym_reward(
        [f"<answer>{a['answer']}</answer>", f"<answer>{c['answer']}</answer>", "<answer>1</answer>", ""],
        reasoning_gym_entry=[a, json.dumps(c), None, c],
    )
    assert out[:3] == [1.0, 1.0, None]
    assert out[3] < 1.0


def test_missing_column_gives_none():
    assert reasoning_gym_reward(["<answer>3</answer>", "x"]) == [None, None]


def test_malformed_or_unknown_entry_raises(arithmetic):
    with pytest.raises(ValueError, match="source_dataset"):
        reasoning_gym_reward(["x"], reasoning_gym_entry=[{"question": "q", "answer": "a"}])
    bad = dict(arithmetic[0], metadata=dict(arithmetic[0]["metadata"], source_dataset="no_such_task"))
    with pytest.raises(ValueError, match="no_such_task"):
        reasoning_gym_reward(["x"], reasoning_gym_entry=[bad])
    with pytest.raises(ValueError, match="JSON"):
        reasoning_gym_reward(["x"], reasoning_gym_entry=["{not json"])
