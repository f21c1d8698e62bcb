"""accuracy: extraction, equivalence, None for unparseable gold, hard time limits."""

import multiprocessing
import threading
import time

import pytest

from rewards import accuracy_reward, extract_answer, extract_gold, timelimit
from rewards.extract import last_boxed, last_number, normalize_answer

POWER_TOWER = "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}"  # sympy never finishes comparing this

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
    out = accuracy_reward(["<answer>5</answer>"] * 4, solution=["The capital of France.", "5", "Paris", "???"])
    assert out == [None, 1.0, None, None]


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
        ("v2 and -7", "-7"),
        ("", None),
        ("<answer></answer>", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extract_gold_and_helpers():
    assert extract_gold("blah\n#### 1,234") == "1,234"
    assert extract_gold("So $\\boxed{\\dfrac{1}{2}}$.") == "\\dfrac{1}{2}"
    assert extract_gold(" 72 ") == "72"
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert last_number("3.14 and 2,718") == "2,718"
    assert normalize_answer("$1{,}000$.") == "1,000"
    assert normalize_answer("5 and 6") == "5 and 6"


def test_from_a_thread_gives_correct_results():
    # math-verify's own signal.alarm timeout fails off the main thread (scores 0): not here.
    out, errors = [], []

    def run():
        try:
            out.append(
                accuracy_reward(
                    ["<answer>0.5</answer>", "\\boxed{(1, 2]}", "\\boxed{\\frac{1}{3}}"],
                    solution=["\\frac{1}{2}", "(1,2]", "0.5"],
                )
            )
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert out == [[1.0, 1.0, 0.0]] * 3


def _in_child(queue):
    queue.put(accuracy_reward(["<answer>\\frac{2}{4}</answer>", "\\boxed{7}"], solution=["0.5", "8"]))


def test_from_a_forked_process_gives_correct_results():
    accuracy_reward(["\\boxed{\\frac{1}{2}}"], solution=["0.5"])  # the parent has a warm helper
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_child, args=(queue,))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(30)
    assert result == [1.0, 0.0]
    assert proc.exitcode == 0
    # and the parent's helper still works
    assert accuracy_reward(["\\boxed{\\frac{1}{2}}"], solution=["0.5"]) == [1.0]


def test_pathological_input_returns_within_the_limit():
    accuracy_reward(["\\boxed{\\frac{1}{2}}"], solution=["0.5"])  # start the helper first
    start = time.monotonic()
    out = accuracy_reward([POWER_TOWER], solution=["5"], timeout_seconds=1.0)
    elapsed = time.monotonic() - start
    assert out == [0.0]
    assert elapsed < 1.0 + 2.0  # the limit, plus slack for killing the helper on a busy machine
    # a fresh helper takes over
    assert accuracy_reward(["\\boxed{\\frac{1}{2}}"], solution=["0.5"]) == [1.0]


def test_pathological_input_in_a_thread_is_bounded_too():
    out = []
    # the pathological call has a 1 s limit; the ordinary one after it (default limit, so a loaded
    # machine cannot make it flaky) shows the killed helper was replaced
    t = threading.Thread(
        target=lambda: out.extend(
            [
                accuracy_reward([POWER_TOWER], solution=["5"], timeout_seconds=1.0),
                accuracy_reward(["<answer>\\frac{1}{2}</answer>"], solution=["0.5"]),
            ]
        )
    )
    start = time.monotonic()
    t.start()
    t.join(30)
    assert out == [[0.0], [1.0]]
    assert time.monotonic() - start < 15


def test_timelimit_call_kills_and_recovers():
    pid = timelimit.call("os", "getpid", (), 30)
    assert timelimit.call("os", "getpid", (), 30) == pid  # reused
    with pytest.raises(timelimit.VerifierError, match="ValueError"):
        timelimit.call("math", "sqrt", (-1.0,), 30)
    assert timelimit.call("os", "getpid", (), 30) == pid  # an exception does not cost the helper
    start = time.monotonic()
    with pytest.raises(timelimit.VerifierTimeout):
        timelimit.call("time", "sleep", (30,), 0.5)
    assert time.monotonic() - start < 3
    assert timelimit.call("os", "getpid", (), 30) != pid  # killed and replaced
    with pytest.raises(ValueError):
        timelimit.call("os", "getpid", (), 0)


def test_timelimit_helper_death_and_setup_errors():
    pid = timelimit.call("os", "getpid", (), 30)
    with pytest.raises(timelimit.VerifierError, match="died"):
        timelimit.call("os", "_exit", (3,), 30)
    assert timelimit.call("os", "getpid", (), 30) != pid  # replaced
    with pytest.raises(timelimit.VerifierStartError, match="no_such_module_xyz"):
        timelimit.call("no_such_module_xyz", "f", (), 30)


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
