"""Length-shaping rewards (hand-computed points) and the repetition penalty."""

import math

import pytest

from rewards import cosine_reward, length_reward, repetition_reward, soft_overlong_reward
from rewards.length import cosfn

RIGHT = "<answer>4</answer>"
WRONG = "<answer>5</answer>"


def ids(n):
    return list(range(n))


def test_cosfn_endpoints():
    assert cosfn(0, 100, 0.5, 1.0) == pytest.approx(1.0)
    assert cosfn(100, 100, 0.5, 1.0) == pytest.approx(0.5)
    assert cosfn(50, 100, 0.5, 1.0) == pytest.approx(0.75)
    assert cosfn(25, 100, 0.0, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosfn(500, 100, 0.5, 1.0) == pytest.approx(0.5)  # clipped, not cos(5π)


@pytest.mark.parametrize(
    "completion, length, expected",
    [
        (RIGHT, 0, 1.0),
        (RIGHT, 50, 0.75),  # 0.5 + 0.5*0.5*(1+cos(π/2))
        (RIGHT, 25, 0.5 + 0.25 * (1 + math.cos(math.pi / 4))),
        (RIGHT, 100, 0.5),
        (RIGHT, 400, 0.5),
        (WRONG, 0, -1.0),
        (WRONG, 50, -0.75),
        (WRONG, 100, -0.5),
    ],
)
def test_cosine_points(completion, length, expected):
    out = cosine_reward([completion], solution=["4"], completion_ids=[ids(length)], max_len=100)
    assert out == [pytest.approx(expected)]


def test_cosine_custom_values_exceed_penalty_and_word_lengths():
    kw = dict(min_value_correct=1.0, max_value_correct=2.0, min_value_wrong=-10.0, max_value_wrong=0.0, max_len=4)
    # no completion_ids: whitespace words. "a b <answer>4</answer>" = 3 words -> t=3 of 4
    out = cosine_reward(["a b " + RIGHT, "a b " + WRONG], solution=["4", "4"], **kw)
    c = math.cos(3 * math.pi / 4)
    assert out == [pytest.approx(1.0 + 0.5 * (1 + c)), pytest.approx(0.0 + 0.5 * (-10.0) * (1 + c))]
    out = cosine_reward(
        [RIGHT, WRONG], solution=["4", "4"], completion_ids=[ids(4), ids(3)], exceed_length_penalty=-3.0, **kw
    )
    assert out[0] == -3.0 and out[1] == pytest.approx(0.5 * (-10.0) * (1 + c))


def test_cosine_none_for_unparseable_gold_and_bad_max_len():
    assert cosine_reward([RIGHT], solution=[""], completion_ids=[ids(3)]) == [None]
    with pytest.raises(ValueError, match="max_len"):
        cosine_reward([RIGHT], solution=["4"], max_len=0)


@pytest.mark.parametrize(
    "length, expected",
    [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (101, -1.0), (5000, -1.0)],
)
def test_soft_overlong_points(length, expected):
    # DAPO Eq. 13 with L_max=100, L_cache=20: ((100-20) - |y|) / 20 in the soft zone
    out = soft_overlong_reward(["x"], completion_ids=[ids(length)], max_completion_length=100, cache_length=20)
    assert out == [pytest.approx(expected)]


def test_soft_overlong_defaults_and_errors():
    # default L_cache = L_max // 5 = 20
    assert soft_overlong_reward(["x"], completion_ids=[ids(90)], max_completion_length=100) == [pytest.approx(-0.5)]
    # words when no ids: 3 words, L_max 4, L_cache 2 -> (2 - 3) / 2
    assert soft_overlong_reward(["a b c"], max_completion_length=4, cache_length=2) == [pytest.approx(-0.5)]
    with pytest.raises(ValueError, match="cache_length"):
        soft_overlong_reward(["x"], max_completion_length=10, cache_length=11)
    with pytest.raises(ValueError, match="completion_ids"):
        soft_overlong_reward(["x", "y"], completion_ids=[ids(1)], max_completion_length=10)


def test_length_kimi_points():
    # group 1: lengths 10, 20, 30, 50 -> λ = 0.5, 0.25, 0.0, -0.5
    # group 2: all the same length -> 0 for everyone
    completions = [RIGHT, RIGHT, WRONG, WRONG, RIGHT, WRONG]
    lengths = [10, 20, 30, 50, 7, 7]
    out = length_reward(
        completions[:4], solution=["4"] * 4, completion_ids=[ids(n) for n in lengths[:4]], num_generations=4
    )
    assert out == [pytest.approx(0.5), pytest.approx(0.25), 0.0, pytest.approx(-0.5)]
    out = length_reward(completions, solution=["4"] * 6, completion_ids=[ids(n) for n in lengths], num_generations=2)
    # groups of 2: (10 R, 20 R) -> 0.5, -0.5 ; (30 W, 50 W) -> min(0, 0.5)=0, -0.5 ; (7, 7) -> 0, 0
    assert out == [pytest.approx(0.5), pytest.approx(-0.5), 0.0, pytest.approx(-0.5), 0.0, 0.0]


def test_length_wrong_short_is_not_rewarded_and_none_gold():
    out = length_reward([WRONG, RIGHT], solution=["4", "4"], completion_ids=[ids(1), ids(9)], num_generations=2)
    assert out == [0.0, pytest.approx(-0.5)]  # wrong shortest: min(0, 0.5) = 0
    out = length_reward([RIGHT, RIGHT], solution=["", ""], completion_ids=[ids(1), ids(9)], num_generations=2)
    assert out == [None, None]


def test_length_requires_whole_groups():
    with pytest.raises(ValueError, match="num_generations"):
        length_reward([RIGHT] * 3, solution=["4"] * 3, num_generations=2)


@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("a b c a b c", 3, -0.25),  # 4 trigrams, 3 unique
        ("the cat sat on the mat", 3, 0.0),
        ("go go go go go", 1, -0.8),  # 5 unigrams, 1 unique
        ("Go go GO", 1, -2 / 3),  # lower-cased
        ("a b", 3, 0.0),  # shorter than n
        ("", 3, 0.0),
        ("x " * 5000, 3, -(1 - 1 / 4998)),
    ],
)
def test_repetition(text, n, expected):
    assert repetition_reward([text], ngram_size=n) == [pytest.approx(expected)]


def test_repetition_scale_and_errors():
    assert repetition_reward(["a b c a b c"], max_penalty=-2.0) == [pytest.approx(-0.5)]
    with pytest.raises(ValueError, match="max_penalty"):
        repetition_reward(["x"], max_penalty=1.0)
    with pytest.raises(ValueError, match="ngram_size"):
        repetition_reward(["x"], ngram_size=0)
