"""accuracy: extraction, the equivalence layer, None for golds that cannot be scored (issue 15's reproducers
first). Time limits and hostile batches: test_rewards_timelimit.py; the field's cases: test_rewards_agreement.py."""

import pytest

from rewards import accuracy_reward, extract_answer, extract_gold, score_answers
from rewards.equivalence import normalize_answer, number, numbers, read, refusal, text
from rewards.extract import final_boxed, final_statement

# Issue 15's reproducers: (completion, gold, expected).
REPRODUCERS = [
    # false positives: a wrong answer scored 1.0
    (r"\boxed{12}", r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}", 0.0),  # a matrix is not its last entry
    (r"\boxed{\begin{pmatrix}1 & 8 \\ 10 & 12\end{pmatrix}}", r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}", 0.0),
    (r"\boxed{3}", r"\boxed{2} and \boxed{3}", 0.0),  # a gold with several boxes is all of them
    (r"So $x \in (-6, 10)$.", "10", 0.0),  # no number out of a LaTeX expression
    (r"The answer is $\frac{1+\sqrt{5}}{2}$.", "2", 0.0),
    (r"\boxed{111}", "0,111", 0.0),  # 0,111 is not a thousands-separated number
    # false negatives: a right answer scored 0.0 or None
    (r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 1.0),
    (r"\boxed{2.5 \times 10^{3}}", "2500", 1.0),  # scientific notation is a number, not a calculation
    (r"\boxed{3 \cdot 10^{8}}", "300000000", 1.0),
    (r"\boxed{1.2e-3}", "0.0012", 1.0),
    (r"\boxed{11,\! 111,\! 111,\! 100}", "11111111100", 1.0),  # LaTeX thousands separators
    (r"$14{,}916$", "14916", 1.0),
    (r"\boxed{1 000}", "1000", 1.0),
    (r"\boxed{Even}", r"$\text{Even}$", 1.0),  # text answers
    (r"The answer is $\frac{1}{2}$.", r"\frac{1}{2}", 1.0),  # the final math span
    (r"\boxed{2} and \boxed{3}", "2, 3", 1.0),  # several boxes are one multi-part answer
    (r"\boxed{1,2}", r"\boxed{1}\boxed{2}", 1.0),
]


@pytest.mark.parametrize("completion,gold,expected", REPRODUCERS)
def test_issue_15_reproducers(completion, gold, expected):
    assert accuracy_reward([completion], solution=[gold]) == [expected]


CASES = [
    # (gold, completion, expected)
    ("\\frac{1}{2}", "<answer>0.5</answer>", 1.0),
    ("0.5", "so \\boxed{\\frac{1}{2}}", 1.0),
    ("0.5", "so \\boxed{\\frac{1}{3}}", 0.0),
    ("1000", "<answer>1,000</answer>", 1.0),
    ("1,000", "The total is 1000.", 1.0),
    ("1000", "<answer>1,001</answer>", 0.0),
    ("50", "<answer>50%</answer>", 1.0),
    ("50\\%", "<answer>50</answer>", 1.0),
    ("50", "<answer>40%</answer>", 0.0),
    ("72", "<answer>72.0</answer>", 1.0),
    ("-3", "<answer>-3</answer>", 1.0),
    ("-3", "<answer>3</answer>", 0.0),
    ("18", "<answer>\\$18</answer>", 1.0),
    ("18", "<answer>18 dollars</answer>", 1.0),
    ("3", "<answer>3 or 4</answer>", 0.0),
    ("5", "<answer>5 \\text{ cm}</answer>", 1.0),
    ("3", "<answer>x = 3</answer>", 1.0),
    ("(1,2]", "<answer>(1, 2]</answer>", 1.0),
    ("(1,2]", "<answer>[1, 2]</answer>", 0.0),
    ("\\{1,2\\}", "<answer>\\{2, 1\\}</answer>", 1.0),
    ("y = 2x + 1", "<answer>2x + 1 = y</answer>", 1.0),
    ("\\sqrt{2}/2", "<answer>\\frac{1}{\\sqrt{2}}</answer>", 1.0),
    # GSM8K gold
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "She sold 48 + 24 = 72 clips.", 1.0),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "She sold 48 + 24 = 71 clips.", 0.0),
    ("It costs $1,200.\n#### 1,200", "<answer>1200</answer>", 1.0),
    # MATH gold: worked solution with \boxed
    ("Rationalizing, $\\frac{1}{\\sqrt2}=\\boxed{\\frac{\\sqrt{2}}{2}}$.", "\\boxed{\\frac{1}{\\sqrt{2}}}", 1.0),
    ("We get $\\boxed{\\frac{3}{4}}$.", "\\fbox{\\frac{6}{8}}", 1.0),
    ("We get $\\boxed{\\frac{3}{4}}$.", "\\boxed{\\frac{4}{3}}", 0.0),
    # extraction order
    ("5", "\\boxed{3} wait, no: \\boxed{5}", 1.0),
    ("3", "\\boxed{3} wait, no: \\boxed{5}", 0.0),
    ("7", "\\boxed{5} <answer>7</answer>", 1.0),
    ("2", "<answer>1</answer> then <answer>2</answer>", 1.0),
    ("7", "\\boxed{\\boxed{7}}", 1.0),
    ("4", "\\boxed{4} then \\boxed{5", 1.0),  # unclosed last box: the closed one before it
    ("9", "<answer>9", 1.0),  # unclosed answer tag: last number
    ("5", "<answer>The answer is 5</answer>", 1.0),
    # hostile
    ("5", "", 0.0),
    ("5", "no digits here", 0.0),
    ("12", "答案是 <answer>12</answer> ✓", 1.0),
    ("12", "答案是十二", 0.0),
    ("5", "x{" * 5000, 0.0),
    ("5", "\\boxed{" * 3000, 0.0),
    ("5", "<answer>" * 2000 + "5", 1.0),
]


def test_table():
    golds = [g for g, _, _ in CASES]
    completions = [c for _, c, _ in CASES]
    got = accuracy_reward(completions, solution=golds)
    mismatches = [(g, c[:60], e, r) for (g, c, e), r in zip(CASES, got) if r != e]
    assert not mismatches


@pytest.mark.parametrize("gold", ["", "   ", None, "#### ", "\\boxed{}"])
def test_unparseable_gold_is_none(gold):
    assert accuracy_reward(["<answer>5</answer>", ""], solution=[gold, gold]) == [None, None]


def test_prose_gold_is_none_but_others_scored():
    # a sentence cannot be scored; a short text answer ("Paris") can, and 5 is not Paris
    out = accuracy_reward(["<answer>5</answer>"] * 4, solution=["The capital of France.", "5", "Paris", "???"])
    assert out == [None, 1.0, 0.0, None]
    assert accuracy_reward(["<answer>paris</answer>"], solution=["Paris"]) == [1.0]


def test_missing_or_misaligned_solution_raises():
    with pytest.raises(ValueError, match="solution"):
        accuracy_reward(["5"])
    with pytest.raises(ValueError, match="solution"):
        accuracy_reward(["5", "6"], solution=["5"])


def test_unknown_kwargs_ignored_and_int_gold():
    assert accuracy_reward(["\\boxed{72}"], solution=[72], prompts=["q"], foo=[1]) == [1.0]


@pytest.mark.parametrize(
    "text, answer",
    [
        ("<answer> 1/2 </answer>", "1/2"),
        ("<answer>see \\boxed{3}</answer>", "3"),
        ("x \\boxed{\\frac{a}{b}} y", "\\frac{a}{b}"),
        ("it is 1,234.5.", "1,234.5"),
        ("v2 is -7", "-7"),
        ("3 or 4", "3 or 4"),  # a bare answer is read whole: a hedge is not its last number
        ("\\frac{10}{9}", "\\frac{10}{9}"),
        ("\\boxed{255} so ... Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("", None),
        ("<answer></answer>", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_helpers():
    assert final_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert final_boxed("\\boxed{1 + {2}") is None  # unclosed
    assert final_statement("3.14 and 2,718") == "2,718"
    assert final_statement("x^2 + a_1 = v2") is None  # exponents, subscripts and words do not count
    assert final_statement("so 48/2 = 24 and 2/3") == "2/3"
    assert normalize_answer("$1{,}000$.") == "1000"
    assert normalize_answer("5 and 6") == "5 and 6"
    assert normalize_answer("(102,104]") == "(102, 104]"  # inside brackets a comma separates items


@pytest.mark.parametrize(
    "text_,answer",
    [
        ("\\boxed{2} and \\boxed{3}", "2, 3"),
        ("$\\boxed{1}$, $\\boxed{2}$ or $\\boxed{4}$", "1, 2, 4"),
        ("\\boxed{3} wait, no: \\boxed{5}", "5"),  # prose between boxes: the last one
        ("\\boxed{\\boxed{7}}", "7"),
        ("\\boxed 5 apples", "5"),
        ("no box", None),
    ],
)
def test_final_boxed(text_, answer):
    assert final_boxed(text_) == answer


@pytest.mark.parametrize(
    "text_,answer",
    [
        ("So $x \\in (-6, 10)$.", "x \\in (-6, 10)"),
        ("We get $x=3$ and then 7 apples.", "7"),  # the number comes after the math span
        ("First 7, so \\(\\frac{1}{2}\\)", "\\frac{1}{2}"),
        ("$$ 9 $$", "9"),
        ("$" * 1000 + " 4", "4"),  # unclosed spans cost linear time and do not hide the number
        ("nothing here", None),
    ],
)
def test_final_statement(text_, answer):
    assert final_statement(text_) == answer


@pytest.mark.parametrize(
    "answer,kind,value",
    [
        ("1,000.5", "number", 2001 / 2),
        ("-\\frac{3}{4}", "number", -0.75),
        ("\\dfrac{6}{8}", "number", 0.75),
        ("2.5 \\times 10^{3}", "number", 2500),
        ("6.02*10^23", "number", 6.02e23),
        ("10^{6}", "number", 1e6),
        ("25 \\times 10^{2}", "math", None),  # mantissa >= 10: a calculation, not scientific notation
        ("0,111", "numbers", ("set", frozenset({0, 111}))),
        ("(1, 2]", "numbers", ("(]", (1, 2))),
        ("(-\\infty, 3)", "numbers", ("()", (float("-inf"), 3))),
        ("\\{2, 1, 2\\}", "numbers", ("set", frozenset({1, 2}))),
        ("\\text{No Solution}", "text", "no solution"),
        ("sin x", "math", None),  # math function names are not text
        ("The capital of France", "prose", None),
        ("9^9^9", "refused", "a power tower"),
    ],
)
def test_read_kinds(answer, kind, value):
    got = read(answer)
    assert got.kind == kind
    if kind == "number":
        assert float(got.value) == pytest.approx(value)
    elif value is not None:
        assert got.value == value


def test_number_text_and_numbers_reject_what_they_must():
    assert number("1,23") is None and number("0,111") is None and number("\\frac{1}{0}") is None
    assert numbers("(3)") is None and numbers("(x, 2)") is None
    assert text("pi") is None and text("x") is None and text("a b c d") is None


@pytest.mark.parametrize(
    "answer,refused",
    [
        ("9^9^9^9", True),
        ("10^{10^{10^{10}}}", True),
        ("9^{999999999}", True),
        ("99999999999!", True),
        ("(10^{100})!", True),
        ("{" * 40 + "1" + "}" * 40, True),
        ("1" * 1001, True),
        ("2^{2^{n}}+1", False),  # symbolic towers are safe
        ("e^{-x^{2}}", False),
        ("(n+1)!", False),
        ("2^{100}", False),
        ("10!", False),
    ],
)
def test_refusal(answer, refused):
    assert (refusal(answer) is not None) == refused


@pytest.mark.parametrize(
    "solution,fmt,gold",
    [
        # the one gold reader, used by grpo.data and the rewards: agreed behaviour
        ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "auto", "7"),
        ("Total: 1,234 dollars\n#### 1,234", "gsm8k", "1234"),  # a plain number loses thousands commas
        ("blah\n#### 1,234", "auto", "1234"),
        ("So $\\boxed{\\dfrac{1}{2}}$.", "auto", "\\dfrac{1}{2}"),
        ("first \\boxed{1} then \\boxed{\\sqrt{a_{1}}}", "math", "\\sqrt{a_{1}}"),  # the final box run
        ("\\boxed{2} and \\boxed{3}", "math", "2, 3"),
        ("\\boxed{2}, or $\\boxed{2}$", "math", "2"),  # repeats dropped
        ("... Final Answer: The final answer is $28 \\%$. I hope it is correct.", "auto", "28 \\%"),
        ("<answer>0,111</answer>", "auto", "0,111"),  # not a thousands-separated number: as written
        ("\\frac{3}{4}", "auto", "\\frac{3}{4}"),
        (" 42 ", "raw", "42"),
        (72, "auto", "72"),
        (None, "auto", None),
        ("   ", "math", None),
        ("text ####   ", "auto", None),
    ],
)
def test_extract_gold(solution, fmt, gold):
    assert extract_gold(solution, fmt) == gold


@pytest.mark.parametrize(
    "solution,fmt,message",
    [("no marker here", "gsm8k", "####"), ("#### ", "gsm8k", "nothing after"), ("5", "latex", "answer_format")],
)
def test_extract_gold_errors(solution, fmt, message):
    with pytest.raises(ValueError, match=message):
        extract_gold(solution, fmt)


def test_score_answers_takes_extracted_answers():
    assert score_answers(["0.5", None, "3"], ["\\frac{1}{2}", "5", "#### 3"]) == [1.0, 0.0, 1.0]
    assert score_answers([None], ["The capital of France."]) == [None]
    with pytest.raises(ValueError, match="2 answers"):
        score_answers(["1", "2"], ["1"])


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        ("<answer>-6 + -9</answer>", "-15", 0.0),  # the question copied into the answer: a hack, not a result
        ("<answer>2 * 4</answer>", "8", 0.0),
        ("<answer>2 \\times 4</answer>", "8", 0.0),
        ("<answer>3^2</answer>", "9", 0.0),
        ("<answer>( -9 / 9 )</answer>", "-1", 0.0),
        ("<answer>-15</answer>", "-15", 1.0),  # the result itself
        ("<answer>1/2</answer>", "0.5", 1.0),  # a single fraction is a value
        ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>x = 3 + 4</answer>", "x = 7", 1.0),  # a symbolic gold keeps math-verify's equivalence
    ],
)
def test_unevaluated_arithmetic_is_not_an_answer(answer, gold, expected):
    assert accuracy_reward([answer], solution=[gold]) == [expected]
