"""Evaluation with test-time compute: stop strings in the HF sampler, thinking budgets (cap and s1's
budget forcing) with a scripted sampler and the tiny model, benchmarks, the ``grpo eval`` command end to
end (outputs, resume) and evaluation during training."""

import json
import os

import pytest
import torch

from grpo.cli import main
from grpo.data import render_prompt
from grpo.eval.heldout import evaluate_during_training
from grpo.eval.metrics import pass_at_k
from grpo.eval.runner import EvalSettings, problem_metrics
from grpo.eval.thinking_budget import ThinkingBudget, generate_with_budget, thought_ids
from grpo.samplers import Sampler, SamplingConfig, build_sampler
from grpo.samplers.decode import left_pad
from grpo.samplers.hf import first_stop_end
from grpo.types import Rollout
from rewards import get_reward_funcs
from tests.conftest import SHARED_DATA, SMOKE_RECIPE

needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="../shared/data is absent")


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ScriptedSampler(Sampler):
    """Returns chosen texts: ``script(call, prompt_ids, config)`` gives the full text a row would generate; it is cut
    like ``HFSampler`` cuts (after the token completing a stop string, after EOS, at the cap). Clones made by
    ``with_config`` share the call log ``calls``: ``(prompt_ids, config)`` per generate call."""

    def __init__(self, tokenizer, config, script, calls=None):
        self.tokenizer, self.config, self.script = tokenizer, config, script
        self.calls = [] if calls is None else calls

    def with_config(self, config):
        return ScriptedSampler(self.tokenizer, config, self.script, self.calls)

    def sync_weights(self, model):
        return 0.0

    def generate(self, prompt_ids, num_generations):
        call = len(self.calls)
        self.calls.append(([list(p) for p in prompt_ids], self.config))
        eos, cap = self.tokenizer.eos_token_id, self.config.max_completion_length
        rows, flags = [], []
        for p in prompt_ids:
            for _ in range(num_generations):
                ids = encode(self.tokenizer, self.script(call, p, self.config))
                stop = first_stop_end(self.tokenizer, ids, self.config.stop)
                ids = ids[:stop] if stop is not None else ids
                ids = ids[: ids.index(eos) + 1] if eos in ids else ids
                finished = len(ids) <= cap and (stop is not None or ids[-1] == eos)
                rows.append(ids[:cap])
                flags.append(not finished)
        width = max(len(r) for r in rows)
        completion = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        prompts, prompt_mask = left_pad(
            [p for p in prompt_ids for _ in range(num_generations)], self.tokenizer.pad_token_id
        )
        texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
        return Rollout(prompts, prompt_mask, completion, mask, torch.tensor(flags), texts)


def scripted(tokenizer, texts, **config):
    """A scripted sampler whose i-th generate call returns ``texts[i]`` for every row."""
    return ScriptedSampler(
        tokenizer, SamplingConfig(max_completion_length=64, **config), lambda call, p, c: texts[call]
    )


# --- stop strings in the HF sampler ---------------------------------------------------------------------


def test_first_stop_end(tokenizer):
    ids = encode(tokenizer, "abc</think>def")
    end = first_stop_end(tokenizer, ids, ("</think>",))
    assert "</think>" in tokenizer.decode(ids[:end]) and "</think>" not in tokenizer.decode(ids[: end - 1])
    assert first_stop_end(tokenizer, ids, ("zzz",)) is None and first_stop_end(tokenizer, ids, ()) is None


def test_hf_sampler_stops_at_a_stop_string_and_is_unchanged_without_one(tiny_model, tokenizer):
    prompts = [encode(tokenizer, "hello there"), encode(tokenizer, "2+2=")]
    plain = build_sampler("hf", tiny_model, tokenizer, SamplingConfig(max_completion_length=10, temperature=1.0))
    assert plain.config.stop == ()  # no stop strings: rows end at EOS or the length cap only
    torch.manual_seed(0)
    free = plain.generate(prompts, 1)
    ids0 = free.completion_ids[0].tolist()
    stop = tokenizer.decode(ids0[2:4])  # row 0 completes this text with its 4th token
    end = first_stop_end(tokenizer, ids0, (stop,))
    assert end == 4 and stop not in tokenizer.decode(free.completion_ids[1].tolist())
    torch.manual_seed(0)  # same draws: finished rows keep sampling (their tokens are replaced by padding)
    stopped = plain.with_config(SamplingConfig(max_completion_length=10, temperature=1.0, stop=(stop,))).generate(
        prompts, 1
    )
    assert stopped.completion_mask.sum(1).tolist() == [4, 10]
    assert stopped.truncated.tolist() == [False, True]  # the stop is an end, not a truncation
    assert stopped.completion_ids[0].tolist() == ids0[:4] + [tokenizer.pad_token_id] * 6
    assert stopped.completion_ids[1].tolist() == free.completion_ids[1].tolist()  # the other row is untouched
    assert stopped.completions[0] == tokenizer.decode(ids0[:4]) and stopped.completions[0].endswith(stop)


# --- thinking budgets -----------------------------------------------------------------------------------


def test_thought_ids_cut_exactly_before_the_tag(tokenizer):
    ids = encode(tokenizer, "<think>\nso x=5.</think>\n<answer>")
    assert tokenizer.decode(thought_ids(tokenizer, ids, "</think>")) == "<think>\nso x=5."
    assert thought_ids(tokenizer, encode(tokenizer, "no tag here"), "</think>") is None


def test_budget_cap_inserts_end_of_thinking_then_generates_the_answer(tokenizer):
    think = "<think>\nlet me think about this problem for a very long time, step by step"
    answer = "<answer>\n5\n</answer><|im_end|>"
    sampler = scripted(tokenizer, [think, answer], temperature=0.6)
    prompt = encode(tokenizer, "what is 2 + 3?")
    (gen,) = generate_with_budget(sampler, tokenizer, [prompt], 1, ThinkingBudget(6, max_answer_tokens=20))
    first6, close = encode(tokenizer, think)[:6], encode(tokenizer, "\n</think>\n")
    assert gen.completion_ids == first6 + close + encode(tokenizer, answer)
    assert gen.completion == tokenizer.decode(first6) + "\n</think>\n" + "<answer>\n5\n</answer>"
    assert gen.thinking_tokens == 6 and gen.forced_close and not gen.truncated and gen.waits == 0
    (p0, c0), (p1, c1) = sampler.calls
    assert c0.stop == ("</think>",) and c0.max_completion_length == 6 and c0.temperature == 0.6
    assert c1.stop == () and c1.max_completion_length == 20
    assert p1 == [prompt + first6 + close]  # generation continues by appending tokens to the prompt ids


def test_budget_forcing_replaces_an_early_end_of_thinking_with_wait(tokenizer):
    texts = [
        "<think>\nA short thought.\n</think>\n<answer>\n7\n</answer>",
        " I should check again, carefully and slowly.\n</think>",
        "\n<answer>\n5\n</answer><|im_end|>",
    ]
    thought0 = encode(tokenizer, "<think>\nA short thought.\n")
    wait = encode(tokenizer, "Wait")
    second = encode(tokenizer, texts[1])
    minimum = len(thought0) + len(wait) + 1  # the first close is too early, the second is not
    sampler = scripted(tokenizer, texts)
    prompt = encode(tokenizer, "what is 2 + 3?")
    (gen,) = generate_with_budget(sampler, tokenizer, [prompt], 1, ThinkingBudget(100, minimum, max_answer_tokens=20))
    assert gen.completion == (
        "<think>\nA short thought.\nWait I should check again, carefully and slowly.\n</think>\n<answer>\n5\n</answer>"
    )
    assert gen.waits == 1 and not gen.forced_close and gen.completion.count("</think>") == 1
    assert gen.thinking_tokens == len(thought0) + len(wait) + len(encode(tokenizer, texts[1][: -len("</think>")]))
    assert sampler.calls[1][0] == [prompt + thought0 + wait]  # "Wait" replaced the tag in the prompt ids
    assert sampler.calls[1][1].max_completion_length == 100 - len(thought0) - len(wait)
    assert len(sampler.calls) == 3 and gen.completion_ids[len(thought0) + len(wait) :][: len(second)] == second

    no_waits = scripted(tokenizer, [texts[0], texts[2]])
    (gen,) = generate_with_budget(no_waits, tokenizer, [prompt], 1, ThinkingBudget(100, minimum, 20, max_waits=0))
    assert gen.waits == 0 and gen.completion == "<think>\nA short thought.\n</think>\n<answer>\n5\n</answer>"


def test_budget_forcing_on_a_model_that_always_closes_at_once(tokenizer):
    def script(call, prompt, config):  # "</think>" at once while thinking; then the answer
        return "</think>" if config.stop else "<answer>1</answer><|im_end|>"

    tag, prompt = encode(tokenizer, "</think>"), [encode(tokenizer, "q")]
    assert len(encode(tokenizer, "Wait")) == 1 and len(tag) == 3
    # min 5 of 12: "Wait" (1 token) until 5 thinking tokens, then the model's own tag is kept
    sampler = ScriptedSampler(tokenizer, SamplingConfig(64), script)
    (gen,) = generate_with_budget(sampler, tokenizer, prompt, 1, ThinkingBudget(12, 5, max_answer_tokens=10))
    assert (gen.waits, gen.thinking_tokens, gen.forced_close) == (5, 5, False)
    assert gen.completion == "Wait" * 5 + "</think><answer>1</answer>"
    # min = cap = 8: after 6 "Wait"s only 2 tokens are left, too few for the 3-token tag: the row is cut at
    # the cap (2 tokens of the tag kept) and the end of thinking is inserted
    sampler = ScriptedSampler(tokenizer, SamplingConfig(64), script)
    (gen,) = generate_with_budget(sampler, tokenizer, prompt, 1, ThinkingBudget(8, 8, max_answer_tokens=10))
    assert (gen.waits, gen.thinking_tokens, gen.forced_close) == (6, 8, True)
    assert gen.completion == "Wait" * 6 + tokenizer.decode(tag[:2]) + "\n</think>\n<answer>1</answer>"
    assert [c.max_completion_length for _, c in sampler.calls] == [8, 7, 6, 5, 4, 3, 2, 10]


def test_rows_of_one_round_are_cut_to_their_own_remaining_budget(tokenizer):
    a, c = encode(tokenizer, "A"), encode(tokenizer, "C")

    def script(call, prompt, config):
        if not config.stop:
            return "<answer>1</answer><|im_end|>"
        if prompt[: len(a)] == a:
            return "</think>"  # closes at once, every time
        return "<think>\nab cd</think>" if call == 0 else " a long thought that never ends, on and on and on"

    sampler = ScriptedSampler(tokenizer, SamplingConfig(64), script)
    gen_a, gen_c = generate_with_budget(sampler, tokenizer, [a, c], 1, ThinkingBudget(10, 10, max_answer_tokens=8))
    first_c = thought_ids(tokenizer, encode(tokenizer, "<think>\nab cd</think>"), "</think>")
    assert len(first_c) + 1 < 10 and sampler.calls[1][1].max_completion_length == 9  # round 2: A has 9 left, C fewer
    long_c = encode(tokenizer, " a long thought that never ends, on and on and on")
    left_c = 10 - len(first_c) - 1
    assert gen_c.thinking_tokens == 10 and gen_c.forced_close and gen_c.waits == 1
    assert gen_c.completion_ids[:10] == first_c + encode(tokenizer, "Wait") + long_c[:left_c]
    assert (gen_a.waits, gen_a.thinking_tokens, gen_a.forced_close) == (
        8,
        10,
        True,
    )  # 2 tokens left: no room for the tag


def test_eos_inside_the_thinking_block_finishes_the_completion(tokenizer):
    sampler = scripted(tokenizer, ["<think>\nhmm<|im_end|>"])
    (gen,) = generate_with_budget(sampler, tokenizer, [encode(tokenizer, "q")], 1, ThinkingBudget(50))
    assert len(sampler.calls) == 1 and gen.completion == "<think>\nhmm" and not gen.truncated and not gen.forced_close


def test_budget_cap_on_the_tiny_model(tiny_model, tokenizer):
    torch.manual_seed(0)
    sampler = build_sampler("hf", tiny_model, tokenizer, SamplingConfig(max_completion_length=64, temperature=1.0))
    prompts = [encode(tokenizer, "what is 2 + 3?"), encode(tokenizer, "hi")]
    gens = generate_with_budget(sampler, tokenizer, prompts, 2, ThinkingBudget(5, max_answer_tokens=3))
    close = encode(tokenizer, "\n</think>\n")
    assert len(gens) == 4
    for gen in gens:  # a random model never writes </think>: every completion is cut at exactly 5 tokens
        assert gen.forced_close and gen.thinking_tokens == 5
        assert gen.completion_ids[5 : 5 + len(close)] == close and len(gen.completion_ids) <= 5 + len(close) + 3


def test_thinking_budget_checks():
    with pytest.raises(ValueError):
        ThinkingBudget(10, 11)
    with pytest.raises(ValueError):
        ThinkingBudget(0)
    assert EvalSettings(budgets=(8,), min_thinking_tokens="budget").thinking_budget(8).min_thinking_tokens == 8
    assert EvalSettings(min_thinking_tokens=20, max_completion_length=99).thinking_budget(8).max_answer_tokens == 99


# --- per-problem metrics and evaluation during training -------------------------------------------------


def test_problem_metrics():
    verdicts, classes = [0.0, 1.0, 1.0, 0.0], [0, 1, 1, 0]
    m = problem_metrics(verdicts, classes, {"v": [0.3, 0.1, 0.9, 0.5]}, [1, 2, 4])
    assert m["pass@1"] == pytest.approx(0.5) and m["pass@2"] == pytest.approx(pass_at_k(4, 2, 2))
    assert (m["maj@1"], m["maj@2"], m["maj@4"]) == (0.0, 0.0, 0.0)  # 2-2 tie at k=4 -> class 0 (wrong)
    assert (m["bon@1/v"], m["bon@2/v"], m["bon@4/v"]) == (0.0, 0.0, 1.0)


def toy_rows(tokenizer, answers):
    from grpo.config import DataArguments

    args = DataArguments()
    rows = []
    for i, gold in enumerate(answers):
        problem = f"What is {gold} + 0?"
        prompt = render_prompt(problem, tokenizer, args.prompt_template, args.system_prompt)
        rows.append(
            {
                "benchmark": "toy",
                "index": i,
                "problem": problem,
                "solution": gold,
                "prompt": prompt,
                "prompt_ids": encode(tokenizer, prompt),
            }
        )
    return rows


def test_evaluate_during_training_with_scripted_answers(tokenizer):
    rows = toy_rows(tokenizer, ["3", "8"])
    by_prompt = {tuple(r["prompt_ids"]): r["solution"] for r in rows}
    replies = {
        "3": ["<answer>3</answer><|im_end|>", "<answer>4</answer><|im_end|>", "<answer>3.0</answer><|im_end|>"],
        "8": ["<answer>1</answer><|im_end|>", "<answer>8</answer><|im_end|>", "<answer>2</answer><|im_end|>"],
    }
    counters = {}

    def script(call, prompt, config):  # the i-th sample of each problem gets replies[gold][i]
        gold = by_prompt[tuple(prompt)]
        counters[gold] = counters.get(gold, -1) + 1
        return replies[gold][counters[gold] % 3]

    sampler = ScriptedSampler(tokenizer, SamplingConfig(64), script)
    metrics = evaluate_during_training(
        None,
        tokenizer,
        {"toy": rows},
        get_reward_funcs(["format", "accuracy"]),
        num_samples=3,
        max_completion_length=32,
        sampler=sampler,
        batch_size=3,
    )
    # problem "3": correct, wrong, correct -> pass@1 2/3, maj@3 right; problem "8": 1 of 3, votes tie -> "1" wins
    assert metrics["eval/toy/pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2, abs=1e-12)
    assert metrics["eval/toy/maj@3"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["eval/toy/pass@3"] == pytest.approx(1.0, abs=1e-12)
    lengths = [len(encode(tokenizer, t)) for g in ("3", "8") for t in replies[g]]
    assert metrics["eval/toy/completion_length"] == pytest.approx(sum(lengths) / 6, abs=1e-12)
    assert metrics["eval/toy/truncated_frac"] == 0.0
    assert sampler.calls[0][1].max_completion_length == 32 and sampler.calls[0][1].temperature == 0.6


def test_evaluate_during_training_on_the_tiny_model_keeps_the_rng(tiny_model, tokenizer):
    rows = toy_rows(tokenizer, ["3", "8"])
    torch.manual_seed(123)
    metrics = evaluate_during_training(
        tiny_model,
        tokenizer,
        {"toy": rows},
        get_reward_funcs(["accuracy"]),
        num_samples=2,
        max_completion_length=4,
        seed=7,
    )
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # training's random stream is untouched
    assert set(metrics) == {
        f"eval/toy/{k}" for k in ("pass@1", "pass@2", "maj@2", "completion_length", "truncated_frac")
    }
    assert 0 < metrics["eval/toy/completion_length"] <= 4
    again = evaluate_during_training(
        tiny_model,
        tokenizer,
        {"toy": rows},
        get_reward_funcs(["accuracy"]),
        num_samples=2,
        max_completion_length=4,
        seed=7,
    )
    assert again == metrics  # seeded
    with pytest.raises(ValueError, match="correctness"):
        evaluate_during_training(
            tiny_model, tokenizer, {"toy": rows}, get_reward_funcs(["format"]), num_samples=1, max_completion_length=2
        )


# --- benchmarks and the command -------------------------------------------------------------------------


@needs_data
def test_benchmark_rows_limit_levels_and_gold(tokenizer):
    from grpo.config import DataArguments
    from grpo.eval.benchmarks import load_benchmarks

    with open(os.path.join(SHARED_DATA, "gsm8k", "test.jsonl")) as f:
        first = json.loads(f.readline())
    rows = load_benchmarks(["gsm8k", "math500"], tokenizer, DataArguments(think_prefill=True), limit=3, levels=[1, 2])
    gsm = rows["gsm8k"]
    assert len(gsm) == 3 and gsm[0]["solution"] == first["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert gsm[0]["prompt"].endswith("<think>\n") and gsm[0]["problem"] == first["question"]
    assert len(rows["math500"]) == 3 and all(r["level"] in (1, 2) for r in rows["math500"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmarks(["gsm9k"], tokenizer, DataArguments())


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@needs_data
def test_grpo_eval_writes_every_output(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        "tiny-random-llama",
        "--benchmarks",
        "gsm8k",
        "--limit",
        "4",
        "--num_samples",
        "2",
        "--max_completion_length",
        "8",
        "--out_dir",
        str(out),
    ]
    assert main(argv) == 0
    records = read_jsonl(out / "samples.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3] and all(len(r["samples"]) == 2 for r in records)
    for r in records:
        for s in r["samples"]:
            assert 1 <= s["tokens"] <= 8 and s["correct"] in (0.0, 1.0) and s["truncated"] == (s["tokens"] == 8)
    summary = json.loads((out / "summary.json").read_text())
    (result,) = summary["results"]
    verdicts = [[s["correct"] for s in r["samples"]] for r in records]
    assert result["pass@1"] == pytest.approx(sum(sum(v) / 2 for v in verdicts) / 4, abs=1e-12)
    assert result["pass@2"] == pytest.approx(sum(pass_at_k(2, int(sum(v)), 2) for v in verdicts) / 4, abs=1e-12)
    tokens = [s["tokens"] for r in records for s in r["samples"]]
    assert result["completion_length/mean"] == pytest.approx(sum(tokens) / 8, abs=1e-12)
    assert summary["settings"]["temperature"] == 0.6 and summary["settings"]["top_p"] == 0.95
    table = (out / "summary.md").read_text()
    assert table.startswith("| benchmark |") and "| gsm8k | none | 4 | 2 |" in table
    assert (out / "accuracy_vs_k.png").read_bytes().startswith(PNG_MAGIC)
    assert "| gsm8k |" in capsys.readouterr().out

    # resume: nothing is sampled again; a larger limit adds only the new problems
    before = (out / "samples.jsonl").read_text()
    assert main(argv) == 0 and (out / "samples.jsonl").read_text() == before
    assert main([*argv[:5], "--limit", "5", *argv[7:]]) == 0
    assert [r["index"] for r in read_jsonl(out / "samples.jsonl")] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="temperature"):
        main([*argv, "--temperature", "1.0"])


@needs_data
def test_grpo_eval_budget_sweep_and_verifiers(tmp_path):
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-random-llama",
                "--benchmarks",
                "gsm8k",
                "--limit",
                "2",
                "--num_samples",
                "2",
                "--thinking_budgets",
                "3,5",
                "--max_answer_tokens",
                "2",
                "--verifiers",
                "reward:format,self",
                "--out_dir",
                str(out),
            ]
        )
        == 0
    )
    records = read_jsonl(out / "samples.jsonl")
    assert [(r["budget"], r["index"]) for r in records] == [(3, 0), (3, 1), (5, 0), (5, 1)]
    for r in records:
        assert set(r["metrics"]) == {
            "pass@1",
            "pass@2",
            "maj@1",
            "maj@2",
            "bon@1/reward:format",
            "bon@2/reward:format",
            "bon@1/self",
            "bon@2/self",
        }
        for s in r["samples"]:
            assert s["thinking_tokens"] == r["budget"] and s["forced_close"] and "</think>" in s["completion"]
            assert 0.0 < s["scores"]["self"] < 1.0 and s["scores"]["reward:format"] == 0.0
    results = json.loads((out / "summary.json").read_text())["results"]
    assert [r["thinking_tokens/mean"] for r in results] == [3.0, 5.0]
    assert (out / "accuracy_vs_budget.png").read_bytes().startswith(PNG_MAGIC)
    assert "bon@K self" in (out / "summary.md").read_text()


def test_recipe_mode_still_works(tmp_path, capsys):
    out = tmp_path / "recipe.jsonl"
    assert (
        main(
            [
                "eval",
                SMOKE_RECIPE,
                "--model",
                "tiny-random-llama",
                "--dataset_size",
                "3",
                "--max_completion_length",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_problems"] == 3 and "accuracy" in summary and len(read_jsonl(out)) == 3


def test_read_records_cuts_a_torn_last_line(tmp_path):
    from grpo.eval.runner import read_records

    path = tmp_path / "samples.jsonl"
    record = {
        "benchmark": "b",
        "budget": None,
        "index": 0,
        "metrics": None,
        "samples": [{"completion": "long text", "tokens": 3}],
    }
    path.write_text(json.dumps(record) + "\n" + '{"benchmark": "b", "bud')
    assert read_records(str(path)) == [{**record, "samples": [{"tokens": 3}]}]  # texts are not kept in memory
    assert path.read_text() == json.dumps(record) + "\n"
    path.write_text("{broken\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=":1: invalid JSON"):
        read_records(str(path))


def test_count_thinking_tokens(tokenizer):
    from grpo.eval.thinking_budget import count_thinking_tokens

    think, rest = "<think>\nthe sum is 5.\n", "</think>\n<answer>5</answer>"
    ids = encode(tokenizer, think + rest)
    assert ids == encode(tokenizer, think) + encode(tokenizer, rest)  # the boundary falls between tokens here
    assert count_thinking_tokens(tokenizer, ids, think + rest) == len(encode(tokenizer, think))
    assert count_thinking_tokens(tokenizer, ids[:4], tokenizer.decode(ids[:4])) == 4  # no tag: all tokens


def test_rescore_replaces_scores_and_recomputes_best_of_n(tmp_path, tokenizer):
    from grpo.eval.runner import rescore
    from grpo.eval.verifiers import build_verifier

    good, bad = "<think>\nsum\n</think>\n<answer>\n3\n</answer>", "the answer is 3"
    samples = lambda texts, correct: [  # noqa: E731
        {
            "completion": t,
            "answer": "3",
            "correct": c,
            "class": 0 if c else 1,
            "tokens": 5,
            "thinking_tokens": None,
            "truncated": False,
            "waits": 0,
            "forced_close": False,
            "scores": {"reward:format": 0.0},
        }
        for t, c in zip(texts, correct)
    ]
    # problem 0: the well-formatted sample is the correct one; problem 1: it is the wrong one
    records = [
        {
            "benchmark": "b",
            "budget": None,
            "index": i,
            "problem": "1+2?",
            "gold": "3",
            "majority_answer": "3",
            "metrics": {"stale": 1.0},
            "samples": samples(texts, correct),
        }
        for i, (texts, correct) in enumerate([([bad, good], [0.0, 1.0]), ([good, bad], [0.0, 1.0])])
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = {"b": [{"benchmark": "b", "index": i, "problem": "1+2?", "prompt": "P", "solution": "3"} for i in (0, 1)]}
    verifiers = {"reward:format": build_verifier("reward:format")}

    out = rescore(str(path), rows, verifiers, tokenizer)
    stored = read_jsonl(path)
    assert [[s["scores"] for s in r["samples"]] for r in stored] == [
        [{"reward:format": 0.0}, {"reward:format": 1.0}],
        [{"reward:format": 1.0}, {"reward:format": 0.0}],
    ]
    assert [r["metrics"]["bon@2/reward:format"] for r in stored] == [1.0, 0.0]  # best-of-2 picks the formatted one
    assert [r["metrics"]["pass@2"] for r in stored] == [1.0, 1.0] and "stale" not in stored[0]["metrics"]
    assert [s["completion"] for s in stored[1]["samples"]] == [good, bad]  # texts and verdicts kept
    assert [r["metrics"] for r in out] == [r["metrics"] for r in stored] and "completion" not in out[0]["samples"][0]

    before = path.read_text()
    with pytest.raises(ValueError, match=r"samples.jsonl:2: problem 1 of b"):
        rescore(str(path), {"b": rows["b"][:1]}, verifiers, tokenizer)
    assert path.read_text() == before and os.listdir(tmp_path) == ["samples.jsonl"]  # old file whole, no temp left


@needs_data
def test_grpo_eval_rescore_reproduces_the_run_and_refuses_other_settings(tmp_path):
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        "tiny-random-llama",
        "--benchmarks",
        "gsm8k",
        "--limit",
        "2",
        "--num_samples",
        "2",
        "--max_completion_length",
        "6",
        "--out_dir",
        str(out),
    ]
    with pytest.raises(FileNotFoundError, match="--rescore needs"):
        main([*argv, "--rescore"])
    assert main([*argv, "--verifiers", "reward:format"]) == 0
    sampled = read_jsonl(out / "samples.jsonl")
    assert main([*argv, "--verifiers", "reward:format", "--rescore"]) == 0  # same verifier: the same file
    assert read_jsonl(out / "samples.jsonl") == sampled
    assert main([*argv, "--verifiers", "self", "--rescore"]) == 0  # a verifier added after the run
    rescored = read_jsonl(out / "samples.jsonl")
    assert all(set(s["scores"]) == {"self"} and 0.0 < s["scores"]["self"] < 1.0 for r in rescored for s in r["samples"])
    assert all(
        set(r["metrics"]) == {"pass@1", "pass@2", "maj@1", "maj@2", "bon@1/self", "bon@2/self"} for r in rescored
    )
    strip = lambda rs: [[{k: v for k, v in s.items() if k != "scores"} for s in r["samples"]] for r in rs]  # noqa: E731
    assert strip(rescored) == strip(sampled)
    assert "bon@K self" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="temperature"):
        main([*argv, "--temperature", "1.0", "--rescore"])


@needs_data
def test_grpo_eval_reward_verifiers_take_the_recipes_settings(tmp_path):
    out = tmp_path / "eval"
    argv = [
        "eval",
        "recipes/smollm2/lora_arithmetic_format.yaml",
        "--model",
        "tiny-random-llama",
        "--benchmarks",
        "gsm8k",
        "--limit",
        "1",
        "--num_samples",
        "2",
        "--max_completion_length",
        "4",
        "--verifiers",
        "reward:format",
        "--out_dir",
        str(out),
    ]
    assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["reward_kwargs"] == {"format": {"strict": False}}
    with pytest.raises(ValueError, match="reward_kwargs"):  # other verifier settings: no silent resume
        main([*argv, "--reward_kwargs", '{"format": {"strict": true}}'])
    assert main([*argv, "--reward_kwargs", '{"format": {"strict": true}}', "--rescore"]) == 0
    assert json.loads((out / "run.json").read_text())["reward_kwargs"] == {"format": {"strict": True}}


def test_summary_standard_error_and_mean_verifier_score():
    from grpo.eval.report import markdown_table, summarize

    def record(index, verdicts, scores):
        samples = [
            {
                "correct": v,
                "tokens": 10,
                "truncated": False,
                "thinking_tokens": 10,
                "waits": 0,
                "forced_close": False,
                "scores": {"rm": s},
            }
            for v, s in zip(verdicts, scores)
        ]
        metrics = {"pass@1": sum(verdicts) / len(verdicts), "bon@2/rm": 0.0}
        return {"benchmark": "b", "budget": None, "index": index, "metrics": metrics, "samples": samples}

    # per-problem pass@1: 1.0, 0.5, 0.0 -> mean 0.5, sample sd 0.5, s.e. 0.5 / sqrt(3)
    (result,) = summarize(
        [record(0, [1.0, 1.0], [2.0, 4.0]), record(1, [1.0, 0.0], [None, -1.0]), record(2, [0.0, 0.0], [0.0, 1.0])]
    )
    assert result["pass@1"] == 0.5 and result["pass@1_stderr"] == pytest.approx(0.5 / 3**0.5, rel=1e-12)
    assert result["score/rm"] == pytest.approx(6.0 / 5, rel=1e-12)  # the None score is left out
    header, _, row = markdown_table([result]).splitlines()
    assert (
        "| pass@1 | ± s.e. |" in header and "| mean rm |" in header and "| 50.0 | 28.9 |" in row and "| 1.20 |" in row
    )
    (single,) = summarize([record(0, [1.0, 0.0], [1.0, 0.0])])
    assert single["pass@1_stderr"] is None  # one problem: no error bar


def test_compare_table_labels_each_runs_rows(tmp_path):
    from grpo.eval.report import compare_table

    for name, p in (("base", 0.25), ("trained", 0.5)):
        (tmp_path / name).mkdir()
        result = {"benchmark": "gsm8k", "budget": None, "num_problems": 4, "num_samples": 2, "pass@1": p, "pass@2": p}
        (tmp_path / name / "summary.json").write_text(json.dumps({"settings": {}, "results": [result]}))
    lines = compare_table([str(tmp_path / "base"), str(tmp_path / "trained")]).splitlines()
    assert lines[0].startswith("| run | benchmark |")
    assert lines[2].startswith("| base | gsm8k | none | 4 | 2 | 25.0 |")
    assert lines[3].startswith("| trained | gsm8k | none | 4 | 2 | 50.0 |")
    assert compare_table([str(tmp_path / "base")], ["before"]).splitlines()[2].startswith("| before |")
    with pytest.raises(FileNotFoundError, match="missing/summary.json"):
        compare_table([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="1 labels for 2 folders"):
        compare_table([str(tmp_path / "base"), str(tmp_path / "trained")], ["x"])


def test_accuracy_plots_zoom_on_small_accuracies():
    from grpo.eval.report import accuracy_ylim

    assert accuracy_ylim([2.0, 12.0]) == pytest.approx((-0.45, 15.0))  # a 135M model's few percent fill the panel
    assert accuracy_ylim([0.0, 1.0]) == pytest.approx((-0.15, 5.0)) == accuracy_ylim([])
    assert accuracy_ylim([10.0, 71.0]) == (-3.0, 103.0)  # a real model: the whole 0-100 scale
