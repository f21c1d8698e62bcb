"""format, tag_count, detect_think_prefill, language_consistency."""

import pytest

from rewards import detect_think_prefill, format_reward, language_consistency_reward, tag_count_reward
from rewards.language import language_tokens

GOOD = "<think>\nLet me add.\n2+2=4\n</think>\n<answer>\n4\n</answer>"

FORMAT_CASES = [
    # (completion, strict, lenient)
    (GOOD, 1.0, 1.0),
    ("<think>\n\n</think>\n<answer>\n\n</answer>", 1.0, 1.0),
    ("<think>x</think><answer>4</answer>", 0.0, 1.0),
    ("  <think>\n x \n</think>\n\n<answer> 4 </answer>\n", 0.0, 1.0),
    (GOOD + "\n", 0.0, 1.0),  # strict: nothing after </answer>
    ("Sure! " + GOOD, 0.0, 0.0),  # text before the block
    (GOOD + " extra", 0.0, 0.0),
    ("<answer>\n4\n</answer>\n<think>\nx\n</think>", 0.0, 0.0),  # wrong order
    ("<think>\nx\n</think>\n<answer>\n4\n", 0.0, 0.0),  # unclosed answer
    ("<think>\nx\n<answer>\n4\n</answer>", 0.0, 0.0),  # unclosed think
    (GOOD.replace("4\n</answer>", "4\n</answer>\n<answer>\n5\n</answer>"), 0.0, 0.0),  # two answers
    ("<think>\n<think>\nx\n</think>\n<answer>\n4\n</answer>", 0.0, 0.0),  # nested think
    ("", 0.0, 0.0),
    ("<think>\n思考 ünïcödé 🤔\n</think>\n<answer>\n四\n</answer>", 1.0, 1.0),
    ("<" * 10000, 0.0, 0.0),
]


@pytest.mark.parametrize("completion, strict, lenient", FORMAT_CASES)
def test_format(completion, strict, lenient):
    assert format_reward([completion]) == [strict]
    assert format_reward([completion], strict=False) == [lenient]


def test_format_think_prefilled():
    body = GOOD[len("<think>\n") :]
    assert format_reward([body]) == [0.0]
    assert format_reward([body], think_prefilled=True) == [1.0]
    assert format_reward([GOOD], think_prefilled=True) == [0.0]  # now two <think>
    assert format_reward(["x\n</think><answer>4</answer>"], strict=False, think_prefilled=True) == [1.0]


TAG_CASES = [
    # (completion, strict, lenient)
    (GOOD, 1.0, 1.0),
    ("", 0.0, 0.0),
    ("<think>x</think><answer>4</answer>", 0.0, 1.0),
    ("<think>\nx\n</think>\n", 0.5, 0.5),
    ("<think>\nx\n</think>\n<answer>\n4", 0.75, 0.75),
    ("<think>\n<think>\nx\n</think>\n<answer>\n4\n</answer>", 0.75, 0.75),  # <think> twice
    ("<answer><answer></answer>", 0.0, 0.25),
]


@pytest.mark.parametrize("completion, strict, lenient", TAG_CASES)
def test_tag_count(completion, strict, lenient):
    assert tag_count_reward([completion]) == [strict]
    assert tag_count_reward([completion], strict=False) == [lenient]


def test_tag_count_think_prefilled():
    body = "Let me add.\n</think>\n<answer>\n4\n</answer>"
    assert tag_count_reward([body]) == [0.75]
    assert tag_count_reward([body], think_prefilled=True) == [1.0]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("<|User|>2+2?<|Assistant|><think>\n", True),
        ("<|im_start|>assistant\n<think>\n\n", True),
        ("<|im_start|>assistant\n", False),
        ("Answer in <think> </think> tags.<|im_start|>assistant\n", False),
        ("<think>\nold\n</think>\n", False),
        ("", False),
    ],
)
def test_detect_think_prefill(prompt, expected):
    assert detect_think_prefill(prompt) is expected


def test_language_tokens_drop_math_and_latex():
    text = "Let $x^2 = 4$ so \\frac{a}{b} gives 42, and 3.5 + 7 = 10.5 $$\\int f$$ \\(y\\) \\[z\\]"
    assert language_tokens(text) == ["Let", "so", "gives", "and"]


LANG_CASES = [
    # (completion, en, zh)
    ("<think>I think 这个 answer is $x^2$ 42</think><answer>4</answer>", 4 / 6, 2 / 6),
    ("<think>我们先计算 2+2=4</think>", 0.0, 1.0),
    ("<think>First compute 2+2=4.</think>", 1.0, 0.0),
    ("plain text without think 中文", 4 / 6, 2 / 6),  # no think block: the whole completion
    ("<think>only the cot counts</think><answer>答案是四</answer>", 1.0, 0.0),
    ("<think>unclosed because truncated 截断", 3 / 5, 2 / 5),
    ("prefilled think 思考\n</think>\n<answer>4</answer>", 2 / 4, 2 / 4),
    ("<think></think>", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("<think>$1+1=2$ 42 \\alpha</think>", 0.0, 0.0),  # nothing counted: empty
    ("<think>café naïve</think>", 0.0, 0.0),  # non-ASCII latin words are not "en"
]


@pytest.mark.parametrize("completion, en, zh", LANG_CASES)
def test_language_consistency(completion, en, zh):
    assert language_consistency_reward([completion]) == [pytest.approx(en)]
    assert language_consistency_reward([completion], target_language="zh") == [pytest.approx(zh)]


def test_language_consistency_other_languages_and_errors():
    assert language_consistency_reward(["Привет мир hello"], target_language="ru") == [pytest.approx(2 / 3)]
    assert language_consistency_reward(["ひらがな漢字"], target_language="ja") == [1.0]
    assert language_consistency_reward(["한국어 text"], target_language="ko") == [pytest.approx(3 / 4)]
    with pytest.raises(ValueError, match="supported"):
        language_consistency_reward(["x"], target_language="xx")
