"""Agreement with the field: answer-equivalence cases of public suites, as data, scored by the accuracy reward.

tests/data/answer_equivalence_cases.jsonl holds one case per line: ``source`` (the suite and file), ``case``
(its test and index, or the grader rule it illustrates), ``gold``, ``completion``, the source's verdict
(1, 0, or null for "cannot be scored"), ours, and ``status``: ``agree``, ``design`` (a documented
convention of ours differs; ``why`` says which) or ``disagree`` (the source's expectation is wrong;
``why`` says how). Sources: Math-Verify 0.9's own tests, open-r1's and trl's reward tests, Qwen2.5-Math's
grader tests, and cases illustrating the rules of PRM800K's grader and lm-eval's minerva_math. The cases
were read from those files as data (gold, prediction, expected); no code of theirs is used.
"""

import collections
import json
import os

import pytest

from rewards import accuracy_reward
from tests.conftest import ROOT, SHARED_DATA

CASES_FILE = os.path.join(ROOT, "tests", "data", "answer_equivalence_cases.jsonl")
STATUSES = {"agree", "design", "disagree"}


def load_cases() -> list[dict]:
    with open(CASES_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


CASES = load_cases()
SOURCES = sorted({c["source"] for c in CASES})


def score(cases: list[dict]) -> list[float | None]:
    # generous limits: this measures equivalence, not speed (a few cases take seconds on a busy machine)
    return accuracy_reward(
        [c["completion"] for c in cases],
        solution=[c["gold"] for c in cases],
        timeout_seconds=60,
        batch_timeout_seconds=900,
    )


def test_the_table_is_consistent_and_has_zero_false_positives():
    assert len(CASES) > 300 and len(SOURCES) >= 6
    for c in CASES:
        assert c["status"] in STATUSES, c["case"]
        assert (c["status"] == "agree") == (c["ours"] == c["source_verdict"]), c["case"]
        assert c["status"] == "agree" or c.get("why"), c["case"]
        # a 1.0 where the source says 0 is only ever a right answer refused for its notation or layout
        if c["ours"] == 1 and c["source_verdict"] == 0:
            assert c.get("answer_is_right") is True and c["status"] == "design", c["case"]
    # the wrong answers of every source (its 0 verdicts) are all scored 0
    wrong = [c for c in CASES if c["source_verdict"] == 0 and not c.get("answer_is_right")]
    assert len(wrong) > 50 and all(c["ours"] == 0 for c in wrong)


@pytest.mark.parametrize("source", SOURCES)
def test_our_verdicts_are_the_recorded_ones(source):
    cases = [c for c in CASES if c["source"] == source]
    got = score(cases)
    mismatches = [(c["case"], c["ours"], g) for c, g in zip(cases, got) if (None if g is None else int(g)) != c["ours"]]
    assert not mismatches


def agreement_table(cases: list[dict]) -> list[tuple[str, int, int, int, int, int]]:
    """Per source: (source, cases, agree, design, disagree, false positives: wrong answers scored 1)."""
    counts = collections.defaultdict(collections.Counter)
    for c in cases:
        counts[c["source"]][c["status"]] += 1
        counts[c["source"]]["fp"] += c["ours"] == 1 and c["source_verdict"] == 0 and not c.get("answer_is_right")
    return [
        (s, sum(n[k] for k in STATUSES), n["agree"], n["design"], n["disagree"], n["fp"])
        for s, n in sorted(counts.items())
    ]


def test_agreement_table_counts():
    table = agreement_table(CASES)
    assert sum(row[1] for row in table) == len(CASES)
    assert all(row[5] == 0 for row in table)  # zero false positives, per source


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="needs ../shared/data")
@pytest.mark.slow
def test_math500_answers_match_their_own_solutions():
    # the data set's answer field against its worked solution (as a completion): math-verify 0.9.0 matches 500/500
    with open(os.path.join(SHARED_DATA, "math500", "test.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    got = accuracy_reward(
        [r["solution"] for r in rows],
        solution=[r["answer"] for r in rows],
        timeout_seconds=60,
        batch_timeout_seconds=900,
    )
    assert got == [1.0] * len(rows)
