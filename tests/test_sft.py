"""``grpo sft``: rows become prompt/completion pairs with GRPO's own prompt template, and trl trains on the
completion tokens only."""

import json

import pytest

from grpo.config import DataArguments
from grpo.data import build_prompt_dataset
from grpo.r1.sft import SFTArguments, build_sft_examples, sft_config, sft_example

COMPLETION = "<think>\nNatalia sold 48/2 = 24 clips in May.\n</think>\n<answer>\n72\n</answer>"
PROBLEM = "Natalia sold clips to 48 of her friends in April. How many?"


@pytest.mark.parametrize("template, prefill", [("chat", False), ("chat", True), ("r1", False)])
def test_prompt_equals_the_grpo_prompt(tmp_path, tokenizer, template, prefill):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": PROBLEM, "answer": "#### 72", "completion": COMPLETION}) + "\n")
    data_args = DataArguments(
        dataset_name=str(path),
        prompt_template=template,
        think_prefill=prefill,
        system_prompt="",
        instruction="Think, then answer.",
    )
    example = sft_example({"problem": PROBLEM, "completion": COMPLETION}, "row", tokenizer, data_args)
    assert example["prompt"] == build_prompt_dataset(data_args, tokenizer).rows[0]["prompt"]
    # with a pre-filled <think> the completion continues inside it; otherwise it opens it
    assert example["completion"] == (COMPLETION[len("<think>\n") :] if prefill else COMPLETION)
    assert (example["prompt"] + example["completion"]).count("<think>\n") == 1


def test_other_layouts_and_errors(tokenizer):
    data_args = DataArguments()
    assert sft_example({"prompt": "P:", "completion": " c"}, "f:1", tokenizer, data_args) == {
        "prompt": "P:",
        "completion": " c",
    }
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<answer>\n4\n</answer>"}]
    example = sft_example({"messages": messages}, "f:2", tokenizer, data_args)
    assert example["completion"] == "<answer>\n4\n</answer>"
    assert example["prompt"] == tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    with pytest.raises(ValueError, match="f:3: the last message must be the assistant's"):
        sft_example({"messages": messages[:1]}, "f:3", tokenizer, data_args)
    with pytest.raises(ValueError, match="f:4: no 'completion'"):
        sft_example({"problem": "x"}, "f:4", tokenizer, data_args)
    with pytest.raises(ValueError, match="f:5: needs a problem"):
        sft_example({"completion": "x"}, "f:5", tokenizer, data_args)


def test_long_rows_dropped_and_loss_on_completion_tokens_only(tmp_path, tokenizer, tiny_model):
    import datasets
    from trl import SFTTrainer

    path = tmp_path / "d.jsonl"
    rows = [{"problem": PROBLEM, "completion": COMPLETION}, {"problem": PROBLEM * 40, "completion": COMPLETION}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data_args = DataArguments(dataset_name=str(path), system_prompt="", think_prefill=True)
    examples, dropped = build_sft_examples(data_args, tokenizer, max_length=200)
    assert len(examples) == 1 and dropped == 1
    args = SFTArguments(output_dir=str(tmp_path / "out"), max_steps=1, max_length=200)
    trainer = SFTTrainer(
        model=tiny_model,
        args=sft_config(args),
        train_dataset=datasets.Dataset.from_list(examples),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    trained = [label for label in row["labels"] if label != -100]  # the tokens with a loss
    assert tokenizer.decode(trained) == examples[0]["completion"] + tokenizer.eos_token
    assert row["input_ids"][len(row["input_ids"]) - len(trained) :] == trained  # the completion is the suffix
    assert tokenizer.decode(row["input_ids"][: len(row["input_ids"]) - len(trained)]) == examples[0]["prompt"]
    assert trainer.args.completion_only_loss is True


def test_distillation_rows_are_rerendered_with_the_students_template(tokenizer):
    """``grpo sample`` rows carry the teacher's rendered prompt; the student's SFT renders the problem again."""
    teacher_row = {
        "problem": PROBLEM,
        "prompt": "<|teacher|>" + PROBLEM + "<|assistant|><think>\n",
        "completion": COMPLETION,
        "solution": "72",
    }
    student = DataArguments(prompt_template="r1")
    example = sft_example(teacher_row, "f:1", tokenizer, student)
    assert "<|teacher|>" not in example["prompt"] and example["prompt"].endswith(f"User: {PROBLEM}. Assistant:")
    assert example["completion"] == COMPLETION
