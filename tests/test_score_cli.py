"""`grpo score` (grpo.score_cli.main)."""

import json

import pytest

from grpo.score_cli import main, read_rows, summarize

GOOD = "<think>\nx\n</think>\n<answer>\n4\n</answer>"


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def table_row(out: str, name: str) -> list[str]:
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{out}")


def test_scores_and_prints_table(tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"completion": GOOD, "solution": "4"},
            {"completion": "<answer>5</answer>", "solution": "4"},
            "",
            {"completion": GOOD, "solution": ""},  # unparseable gold -> None
        ],
    )
    assert main([path, "--rewards", "accuracy,format"]) == 0
    out = capsys.readouterr().out
    assert "3 rows" in out
    # accuracy: values 1, 0, None -> mean .5, std .5, min 0, max 1, 33.3% None, count 3
    assert table_row(out, "accuracy") == ["accuracy", "0.5000", "0.5000", "0.0000", "1.0000", "33.3%", "3"]
    # format: 1, 0, 1
    assert table_row(out, "format")[1:3] == ["0.6667", "0.4714"]


def test_reward_kwargs_are_bound(tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "k.jsonl",
        [
            {"completion": "<answer>4</answer>", "solution": "4", "completion_ids": [1, 2]},
            {"completion": "<answer>4</answer>", "solution": "4", "completion_ids": [1, 2, 3, 4]},
        ],
    )
    rc = main(
        [
            path,
            "--rewards",
            "format,length",
            "--reward_kwargs",
            json.dumps({"format": {"strict": False}, "length": {"num_generations": 2}}),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert table_row(out, "length")[1:5] == ["0.0000", "0.5000", "-0.5000", "0.5000"]
    assert table_row(out, "format")[1] == "0.0000"  # no think block even when lenient


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"completion": "a"}', '{"completion": "b"', '{"completion": "c"}'], ":2: invalid JSON"),
        (['{"completion": "a"}', "[1, 2]"], ":2: expected a JSON object"),
        (['{"solution": "4"}'], ":1: row has no 'completion'"),
        (['{"completion": 5}'], ":1: 'completion' is not text"),
        ([], "no rows"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, capsys, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    assert main([path, "--rewards", "format"]) == 2
    err = capsys.readouterr().err
    assert path in err and message in err


def test_bad_arguments(tmp_path, capsys):
    path = write_jsonl(tmp_path / "ok.jsonl", [{"completion": "x"}])
    assert main([path, "--rewards", "format,nope"]) == 2
    assert "available" in capsys.readouterr().err
    assert main([path, "--rewards", "format", "--reward_kwargs", "{oops"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main([path, "--rewards", "length"]) == 2
    assert "num_generations" in capsys.readouterr().err
    assert main([path, "--rewards", "accuracy"]) == 2  # no solution column
    assert "solution" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl"), "--rewards", "format"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main([path]) == 2  # --rewards is required (argparse)
    assert main(["--help"]) == 0


def test_read_rows_fills_missing_columns_and_renames_prompt(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"completion": "a", "prompt": "p", "x": 1}, {"completion": "b"}])
    completions, columns = read_rows(path)
    assert completions == ["a", "b"]
    assert columns == {"prompts": ["p", None], "x": [1, None]}


def test_summarize():
    s = summarize([1.0, None, 3.0, None])
    assert s == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "none": 0.5, "count": 4}
    assert summarize([None])["mean"] is None
