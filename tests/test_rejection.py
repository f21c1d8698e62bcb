"""Rejection sampling keeps exactly the correct, readable, finished, new completions, at most M per prompt."""

import json

import pytest
import torch

from grpo.r1.sample import SampleArguments, failed_checks, parse_sample_args, run_sample, select_completions
from grpo.types import Rollout

GOOD = (
    "<think>\nNatalia sold 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips in all.\n</think>\n<answer>\n72\n</answer>"
)
# (completion, truncated, final verdict for prompt 1 with gold 72, K = 9, M = 2)
CASES_72 = [
    (GOOD, False, None),
    (GOOD.replace("72", "70"), False, "incorrect"),
    ("Natalia sold 24 clips in May, so 72 clips in all. The answer is 72.", False, "format"),
    (GOOD.replace("in all", "in all (checking)"), True, "truncated"),
    ("<think>\n我们 先 计算 五月 卖了 24 个 然后 48 加 24 clips\n</think>\n<answer>\n72\n</answer>", False, "language"),
    ("<think>\n" + "48 plus 24 is 72. " * 8 + "\n</think>\n<answer>\n72\n</answer>", False, "repetition"),
    (GOOD.replace("Natalia sold", "NATALIA  sold"), False, "duplicate"),  # case and whitespace differ only
    (
        "<think>\nIn May she sold half of 48, which is 24. Together 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>",
        False,
        None,
    ),
    ("<think>\nHalf of 48 is 24; adding April gives 72.\n</think>\n<answer>\n72\n</answer>", False, "over_limit"),
]
CASES_10 = [  # prompt 2, gold 10: nothing acceptable
    ("<think>\n12 dollars an hour for 50 minutes is 12.\n</think>\n<answer>\n12\n</answer>", False, "incorrect"),
    ("<think>\nShe earned 10 dollars.\n</think>\n<answer>10</answer>", False, "format"),
] * 4 + [("", True, "incorrect")]


def rejection_reasons(*args, **kwargs):
    """The first failed check of each completion (as grpo sample rejects it), or None when it passes them all."""
    return [f[0] if f else None for f in failed_checks(*args, **kwargs)]


def test_reasons_of_a_fixed_set():
    args = SampleArguments(num_samples=9, max_per_prompt=2)
    texts, flags, expected = zip(*CASES_72)
    first = rejection_reasons(list(texts), ["72"] * 9, list(flags), args)
    assert select_completions(list(texts), first, 2) == list(expected)
    # each filter is needed: relaxing it lets its case through
    relaxed = rejection_reasons(
        list(texts), ["72"] * 9, list(flags), SampleArguments(min_language_consistency=0.0, max_repetition=1.0)
    )
    assert relaxed[4] is None and relaxed[5] is None
    assert select_completions(list(texts), first, 9)[-1] is None  # the cap, not a check, rejected the last one
    assert rejection_reasons(
        ["<think>\nsold 72\n</think> <answer> 72 </answer>"], ["72"], [False], SampleArguments(format_strict=False)
    ) == [None]


def test_think_prefilled_completions():
    prefilled = GOOD[len("<think>\n") :]
    args = SampleArguments()
    assert rejection_reasons([prefilled], ["72"], [False], args, think_prefilled=True) == [None]
    assert rejection_reasons([prefilled], ["72"], [False], args, think_prefilled=False) == ["format"]


class FixedSampler:
    """Returns the fixed completions of CASES_72 / CASES_10 for the two prompts, whatever the model."""

    def __init__(self, groups):
        self.groups = groups

    def generate(self, prompt_ids, k):
        rows = [case for b in range(len(prompt_ids)) for case in self.groups[b]]
        assert len(rows) == len(prompt_ids) * k
        n = len(rows)
        lengths = torch.tensor([len(text.split()) + 1 for text, _, _ in rows])
        mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()
        return Rollout(
            torch.zeros(n, 1, dtype=torch.long),
            torch.ones(n, 1, dtype=torch.long),
            mask.clone(),
            mask,
            torch.tensor([t for _, t, _ in rows]),
            [text for text, _, _ in rows],
        )


def test_run_sample_writes_exactly_the_kept_completions(tmp_path, monkeypatch):
    data = tmp_path / "problems.jsonl"
    data.write_text(
        json.dumps({"question": "Natalia sold clips ... April and May?", "answer": "#### 72", "source": "a"})
        + "\n"
        + json.dumps({"question": "Weng earns $12 an hour ...", "answer": "#### 10", "source": "b"})
        + "\n"
    )
    import grpo.samplers

    monkeypatch.setattr(grpo.samplers, "build_run_sampler", lambda *a, **k: FixedSampler([CASES_72, CASES_10]))
    out = tmp_path / "out"
    configs = parse_sample_args(
        [
            "--model_name_or_path",
            "tiny-random-llama",
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--num_samples",
            "9",
            "--max_per_prompt",
            "2",
            "--num_generations",
            "2",
            "--per_device_train_batch_size",
            "2",
        ]
    )
    path = run_sample(*configs)
    rows = [json.loads(line) for line in open(path)]
    assert [r["completion"] for r in rows] == [CASES_72[0][0], CASES_72[7][0]]
    assert {r["solution"] for r in rows} == {"72"} and {r["source"] for r in rows} == {"a"}
    assert all(r["problem"].startswith("Natalia") and r["prompt"].endswith("assistant\n") for r in rows)
    stats = json.load(open(out / "stats.json"))["sources"]
    assert stats["a"]["accepted"] == 2 and stats["a"]["completions"] == 9
    assert stats["a"]["acceptance_rate"] == pytest.approx(2 / 9)
    assert stats["a"]["rejected"] == {
        "incorrect": 1,
        "format": 1,
        "truncated": 1,
        "language": 1,
        "repetition": 1,
        "duplicate": 1,
        "over_limit": 1,
    }
    assert stats["b"]["accepted"] == 0 and stats["b"]["prompts_with_accepted"] == 0
    assert stats["b"]["rejected"]["incorrect"] == 5 and stats["b"]["rejected"]["format"] == 4
    # every failed check is counted too: the empty truncated completion fails four of them
    assert stats["a"]["failed"] == {"incorrect": 1, "format": 1, "truncated": 1, "language": 1, "repetition": 1}
    assert stats["b"]["failed"] == {"incorrect": 5, "format": 5, "truncated": 1, "language": 1, "repetition": 0}
    assert stats["all"]["failed"]["format"] == 6
    assert stats["all"]["completions"] == 18 and stats["all"]["acceptance_rate"] == pytest.approx(2 / 18)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_per_prompt"):
        SampleArguments(max_per_prompt=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SampleArguments(max_repetition=1.5)
