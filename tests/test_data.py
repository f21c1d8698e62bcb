import json
import os

import pytest

from grpo.config import DataArguments
from grpo.data import PromptSampler, build_prompt_dataset, render_prompt
from tests.conftest import SHARED_DATA


def test_gold_answers_come_from_the_one_reader(tmp_path, tokenizer):
    # rewards.extract.extract_gold, as the accuracy reward reads the solution column: commas of a plain
    # number dropped, every box of a worked solution kept, an empty gold kept empty (scored None)
    path = tmp_path / "d.jsonl"
    rows = [
        {"question": "q1", "answer": "She has 1,234 apples.\n#### 1,234"},
        {"question": "q2", "answer": "So \\boxed{2} and \\boxed{3}."},
        {"question": "q3", "answer": ""},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = build_prompt_dataset(DataArguments(dataset_name=str(path)), tokenizer)
    assert [r["solution"] for r in ds.rows] == ["1234", "2, 3", ""]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match="row 0.*####"):
        build_prompt_dataset(DataArguments(dataset_name=str(bad), answer_format="gsm8k"), tokenizer)


def test_templates(tokenizer):
    r1 = render_prompt("What is 2+2?", tokenizer, "r1")
    assert r1.startswith("A conversation between User and Assistant") and r1.endswith("User: What is 2+2?. Assistant:")
    chat = render_prompt("What is 2+2?", tokenizer, "chat")
    assert "<think>" in chat and "What is 2+2?" in chat and chat.endswith("<|im_start|>assistant\n")


def test_long_prompts_are_dropped_and_counted(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    rows = [{"question": "short?", "answer": "#### 1"}, {"question": "long " * 400, "answer": "#### 2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = build_prompt_dataset(DataArguments(dataset_name=str(path), max_prompt_length=128), tokenizer)
    assert len(ds) == 1 and ds.num_dropped == 1
    assert ds.rows[0]["solution"] == "1" and len(ds.rows[0]["prompt_ids"]) <= 128


def test_bad_jsonl_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        build_prompt_dataset(DataArguments(dataset_name=str(path)), tokenizer)


def test_missing_column_is_named(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "answer": "1"}\n')
    with pytest.raises(ValueError, match="prompt column"):
        build_prompt_dataset(DataArguments(dataset_name=str(path)), tokenizer)


def test_column_mapping(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1+1?", "gold": "2", "level": 3}\n')
    ds = build_prompt_dataset(DataArguments(dataset_name=str(path), prompt_column="q", answer_column="gold"), tokenizer)
    assert ds.rows[0]["problem"] == "1+1?" and ds.rows[0]["solution"] == "2" and ds.rows[0]["level"] == 3


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="needs ../shared/data")
def test_real_gsm8k_and_math500(tokenizer):
    gsm = build_prompt_dataset(
        DataArguments(dataset_name=f"{SHARED_DATA}/gsm8k/test.jsonl", max_train_samples=20), tokenizer
    )
    assert gsm.rows[0]["solution"] == "18"  # Janet's ducks
    assert all(r["solution"].lstrip("-").replace(".", "").isdigit() for r in gsm.rows)
    math = build_prompt_dataset(
        DataArguments(
            dataset_name=f"{SHARED_DATA}/math500/test.jsonl",
            answer_column="solution",
            answer_format="math",
            max_train_samples=20,
        ),
        tokenizer,
    )
    with open(f"{SHARED_DATA}/math500/test.jsonl") as f:
        answers = [json.loads(line)["answer"] for line in f][:20]
    assert [r["solution"] for r in math.rows] == answers  # the last \boxed{} of the solution is the gold answer


def test_reasoning_gym_rows(tokenizer):
    ds = build_prompt_dataset(DataArguments(dataset_name="reasoning_gym:basic_arithmetic", dataset_size=5), tokenizer)
    assert len(ds) == 5
    entry = ds.rows[0]["reasoning_gym_entry"]
    assert entry["metadata"]["source_dataset"] == "basic_arithmetic" and entry["answer"] == ds.rows[0]["solution"]


def test_prompt_sampler_is_deterministic_disjoint_and_resumable():
    a = PromptSampler(10, batch_size=2, seed=0, num_processes=2, process_index=0)
    b = PromptSampler(10, batch_size=2, seed=0, num_processes=2, process_index=1)
    first = [(a.next_indices(), b.next_indices()) for _ in range(4)]
    for ia, ib in first:
        assert not set(ia) & set(ib)
    epoch0 = [i for pair in first[:2] for part in pair for i in part]
    assert len(set(epoch0)) == 8  # no repeats within an epoch
    resumed = PromptSampler(10, batch_size=2, seed=0, num_processes=2, process_index=0)
    resumed.batches_drawn = 2
    assert resumed.next_indices() == first[2][0]
