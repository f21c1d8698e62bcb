"""Cold-start data builder: exact output on fixed GSM8K rows, the filters, the column source, errors."""

import json
import os

import pytest

from grpo.r1.cold_start import (
    ColdStartArguments,
    build_cold_start,
    clean_gsm8k_reasoning,
    r1_completion,
    run_cold_start,
)
from rewards import accuracy_reward, format_reward, language_consistency_reward

# The first three rows of GSM8K train (openai/grade-school-math, MIT), verbatim.
GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the wallet?",
        "answer": "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5",
    },
]

EXPECTED_COMPLETIONS = [
    "<think>\nNatalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n</think>\n"
    "<answer>\n72\n</answer>",
    "<think>\nWeng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n</think>\n"
    "<answer>\n10\n</answer>",
    "<think>\nIn the beginning, Betty has only 100 / 2 = $50.\nBetty's grandparents gave her 15 * 2 = $30.\n"
    "This means, Betty needs 100 - 50 - 30 - 15 = $5 more.\n</think>\n<answer>\n5\n</answer>",
]


def _rows(rows, name="train.jsonl"):
    return [(f"{name}:{i + 1}", r) for i, r in enumerate(rows)]


def test_gsm8k_rows_exact_output():
    args = ColdStartArguments(source_file="gsm8k/train.jsonl", min_reasoning_words=5)
    kept, stats = build_cold_start(_rows(GSM8K_ROWS), args)
    assert [r["completion"] for r in kept] == EXPECTED_COMPLETIONS
    assert [r["answer"] for r in kept] == ["72", "10", "5"]
    assert [r["solution"] for r in kept] == ["72", "10", "5"]
    assert [r["problem"] for r in kept] == [r["question"] for r in GSM8K_ROWS]
    assert {r["source"] for r in kept} == {"train.jsonl"}
    assert stats == {"rows_read": 3, "kept": 3, "rejected": {"too_short": 0, "too_long": 0, "language": 0}}
    # the rows are what GRPO rewards: strict format 1, correct answer, fully English chains of thought
    completions = [r["completion"] for r in kept]
    assert format_reward(completions, strict=True) == [1.0] * 3
    assert accuracy_reward(completions, solution=[r["answer"] for r in GSM8K_ROWS]) == [1.0] * 3
    assert language_consistency_reward(completions) == [1.0] * 3
    assert not any("<<" in c or ">>" in c or "####" in c for c in completions)


def test_calculator_annotations_and_blank_lines_removed():
    assert clean_gsm8k_reasoning("a = <<1+1=2>>2  apples\n\n  b <<x>>  \n") == "a = 2 apples\nb"
    assert clean_gsm8k_reasoning("no annotation here") == "no annotation here"


def test_length_and_language_filters_and_max_rows():
    chinese = {
        "question": "q?",
        "answer": "我们 先 计算 苹果 的 数量 然后 再 加上 橘子 的 数量 得到 总数 答案 是 七\n#### 7",
    }
    long = {"question": "q?", "answer": " ".join(["step"] * 50) + "\n#### 1"}
    rows = [GSM8K_ROWS[0], chinese, long, GSM8K_ROWS[1], GSM8K_ROWS[2]]
    args = ColdStartArguments(min_reasoning_words=5, max_reasoning_words=40, max_rows=2)
    kept, stats = build_cold_start(_rows(rows), args)
    assert [r["answer"] for r in kept] == ["72", "10"]
    assert stats["rejected"] == {"too_short": 0, "too_long": 1, "language": 1}
    assert stats["rows_read"] == 4  # stops once max_rows are kept
    # negative control: without the language filter the Chinese chain of thought is kept
    kept, _ = build_cold_start(
        _rows([chinese]), ColdStartArguments(min_reasoning_words=5, min_language_consistency=0.0)
    )
    assert [r["answer"] for r in kept] == ["7"]
    # the bounds are inclusive: the first row's reasoning has 19 words
    assert len(build_cold_start(_rows(GSM8K_ROWS[:1]), ColdStartArguments(min_reasoning_words=19))[0]) == 1
    kept, stats = build_cold_start(_rows(GSM8K_ROWS[:1]), ColdStartArguments(min_reasoning_words=20))
    assert kept == [] and stats["rejected"]["too_short"] == 1
    assert (
        len(
            build_cold_start(_rows(GSM8K_ROWS[:1]), ColdStartArguments(min_reasoning_words=1, max_reasoning_words=19))[
                0
            ]
        )
        == 1
    )
    assert (
        build_cold_start(_rows(GSM8K_ROWS[:1]), ColdStartArguments(min_reasoning_words=1, max_reasoning_words=18))[0]
        == []
    )


def test_columns_source(tmp_path):
    path = tmp_path / "traces.jsonl"
    rows = [
        {"q": "What is 2+3?", "why": "Two plus three is five.", "final": 5},
        {"q": "What is 2*3?", "why": "Two times three is six.", "final": "6"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ColdStartArguments(
        source_file=str(path),
        source_format="columns",
        problem_column="q",
        reasoning_column="why",
        answer_column="final",
        min_reasoning_words=1,
        output_dir=str(tmp_path / "out"),
    )
    out = run_cold_start(args)
    written = [json.loads(line) for line in open(out)]
    assert [r["completion"] for r in written] == [
        r1_completion("Two plus three is five.", "5"),
        r1_completion("Two times three is six.", "6"),
    ]
    assert written[0]["completion"] == "<think>\nTwo plus three is five.\n</think>\n<answer>\n5\n</answer>"
    assert json.load(open(tmp_path / "out" / "stats.json"))["kept"] == 2
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")]


def test_bad_rows_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GSM8K_ROWS[0]) + "\n" + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no '####'"):
        run_cold_start(ColdStartArguments(source_file=str(path), output_dir=str(tmp_path / "o")))
    path.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing column 'reasoning'"):
        run_cold_start(
            ColdStartArguments(source_file=str(path), source_format="columns", output_dir=str(tmp_path / "o"))
        )
    with pytest.raises(ValueError, match="source_format"):
        ColdStartArguments(source_format="csv")


def test_cli(tmp_path, capsys):
    from grpo.cli import main

    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    recipe = tmp_path / "cold.yaml"
    recipe.write_text(f"source_file: {path}\nmin_reasoning_words: 5\noutput_dir: {tmp_path / 'out'}\n")
    assert main(["cold_start", str(recipe), "--max_rows", "2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {
        "rows_read": 2,
        "kept": 2,
        "rejected": {"too_short": 0, "too_long": 0, "language": 0},
    }
    assert [json.loads(line)["completion"] for line in open(tmp_path / "out" / "data.jsonl")] == EXPECTED_COMPLETIONS[
        :2
    ]
