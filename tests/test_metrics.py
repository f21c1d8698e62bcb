"""Test-time-compute metrics: pass@k against brute force, maj@k on equivalent notations, ties and
unparseable answers, best-of-N with a reward function, a tiny reward model and self-verification."""

import itertools
import math

import pytest
import torch

from grpo.eval.metrics import (
    answer_classes,
    best_index,
    best_of_n,
    k_values,
    length_stats,
    maj_at_k,
    majority_class,
    mean_at_k,
    pass_at_k,
)
from grpo.eval.verifiers import RewardModelVerifier, SelfVerifier, build_verifier
from rewards import accuracy_reward

# --- pass@k, mean@k ----------------------------------------------------------------------------------


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (the first c correct) that hold at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration_over_all_subsets():
    checked = 0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
                checked += 1
    assert checked == sum((n + 1) * n for n in range(1, 9))


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows floats; the product form does not.
    value = pass_at_k(1000, 1, 500)
    assert value == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1000, 0, 10) == 0.0 and pass_at_k(1000, 991, 10) == 1.0


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4.0, 2, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_at_k_uses_the_first_k_samples_and_matches_pass_at_1():
    verdicts = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert mean_at_k(verdicts, 1) == 1.0
    assert mean_at_k(verdicts, 2) == 0.5
    assert mean_at_k(verdicts, 5) == pytest.approx(pass_at_k(5, 3, 1), abs=1e-15)
    with pytest.raises(ValueError):
        mean_at_k(verdicts, 6)


def test_k_values():
    assert k_values(1) == [1] and k_values(6) == [1, 2, 4, 6] and k_values(8) == [1, 2, 4, 8]


# --- maj@k ---------------------------------------------------------------------------------------------


def test_answer_classes_join_equivalent_notations_and_skip_unparseable():
    answers = ["0.5", None, "\\frac{1}{2}", "???", "2", "2.0", "", "1/2", "\\frac{2}{4}"]
    assert answer_classes(answers) == [0, None, 0, None, 1, 1, None, 0, 0]


def test_maj_at_k_votes_by_equivalence_class():
    answers = ["\\frac{1}{3}", "0.5", "\\frac{1}{2}", "1/3"]
    # classes [0, 1, 1, 0]: first 1 -> 1/3; first 2 -> 1-1 tie -> earliest class (1/3); first 3 -> 1/2 wins
    assert maj_at_k(answers, "\\frac{1}{2}", 1) == 0.0
    assert maj_at_k(answers, "\\frac{1}{2}", 2) == 0.0
    assert maj_at_k(answers, "\\frac{1}{2}", 3) == 1.0
    assert maj_at_k(answers, "0.5", 3) == 1.0  # the gold's notation does not matter either
    assert maj_at_k(answers, "\\frac{1}{3}", 4) == 1.0  # 2-2 tie -> the class seen first


def test_maj_at_k_ties_go_to_the_earliest_class():
    assert maj_at_k(["3", "4", "4", "3"], "3", 4) == 1.0
    assert maj_at_k(["3", "4", "4", "3"], "4", 4) == 0.0
    assert maj_at_k(["4", "3", "3", "4"], "3", 4) == 0.0
    assert majority_class([None, 0, 1, 1, 0], 5) == 0  # classes are numbered in order of first appearance
    assert majority_class([0, 1, 1, 0, 1], 5) == 1 and majority_class([0, 1, 1, 0, 1], 4) == 0


def test_unparseable_answers_do_not_vote():
    # as a class of their own, the three unreadable answers would outvote the single "9"
    assert maj_at_k(["??", "??", None, "9"], "9", 4) == 1.0
    assert maj_at_k([None, "??", None], "9", 3) == 0.0  # nothing voted
    assert majority_class([None, None], 2) is None


def test_maj_at_k_errors():
    with pytest.raises(ValueError, match="gold"):
        maj_at_k(["1"], "???", 1)
    with pytest.raises(ValueError):
        maj_at_k(["1", "2"], "1", 3)


# --- best-of-N -----------------------------------------------------------------------------------------


def test_best_of_n_picks_the_highest_score_ties_earliest_and_skips_missing():
    verdicts = [0.0, 1.0, 0.0, 1.0]
    assert best_of_n([0.1, 0.9, 0.9, 0.5], verdicts, 4) == 1.0  # index 1 (tie with 2 -> earlier)
    assert best_index([0.1, 0.9, 0.9, 0.5], 4) == 1
    assert best_of_n([0.1, 0.2, 0.9, 0.5], verdicts, 4) == 0.0  # index 2 is wrong
    assert best_of_n([0.1, 0.2, 0.9, 0.5], verdicts, 2) == 1.0  # first two only: index 1
    assert best_index([None, math.nan, -5.0, None], 4) == 2
    assert best_of_n([None, None], [1.0, 1.0], 2) == 0.0


CANDIDATES = [
    "The answer is 4.",
    "<think>\nadd them\n</think>\n<answer>\n7\n</answer>",
    "<think>\n3 + 2 = 5\n</think>\n<answer>\n5\n</answer>",
    "<answer>5</answer> sloppy",
]


def test_best_of_n_with_a_reward_function_verifier():
    verify = build_verifier("reward:format")
    scores = verify(["what is 3 + 2?"] * 4, CANDIDATES, {"solution": ["5"] * 4})
    verdicts = accuracy_reward(CANDIDATES, solution=["5"] * 4)
    assert scores == [0.0, 1.0, 1.0, 0.0] and verdicts == [0.0, 0.0, 1.0, 1.0]
    assert best_index(scores, 4) == 1 and best_of_n(scores, verdicts, 4) == 0.0  # tie 1-2: the earlier, wrong one
    reordered = [CANDIDATES[i] for i in (0, 2, 1, 3)]
    scores = verify(["what is 3 + 2?"] * 4, reordered, {"solution": ["5"] * 4})
    assert best_of_n(scores, accuracy_reward(reordered, solution=["5"] * 4), 4) == 1.0


def test_reward_verifier_reads_completions_of_a_think_prefilled_template():
    # The prompt already opens <think>: the completion starts inside the thinking block, as in training.
    completions = ["add them\n</think>\n<answer>\n5\n</answer>", "<think>\nadd them\n</think>\n<answer>\n5\n</answer>"]
    columns = {"solution": ["5"] * 2}
    assert build_verifier("reward:format", think_prefilled=True)(["q"] * 2, completions, columns)[0] == 1.0
    assert build_verifier("reward:format")(["q"] * 2, completions, columns) == [0.0, 1.0]


def test_reward_verifier_takes_the_recipes_reward_settings():
    loose = ["add them</think> <answer>5</answer>"]  # the lenient layout: no newlines around the tags
    strict = build_verifier("reward:format", think_prefilled=True)
    lenient = build_verifier("reward:format", think_prefilled=True, reward_kwargs={"format": {"strict": False}})
    assert strict(["q"], loose, {}) == [0.0] and lenient(["q"], loose, {}) == [1.0]
    other = build_verifier("reward:format", think_prefilled=True, reward_kwargs={"cosine": {"strict": False}})
    assert other(["q"], loose, {}) == [0.0]  # settings of another reward do not leak in
    opened = ["<think>\nadd them\n</think>\n<answer>\n5\n</answer>"]
    fixed = build_verifier("reward:format", think_prefilled=True, reward_kwargs={"format": {"think_prefilled": False}})
    assert fixed(["q"], opened, {}) == [1.0] and strict(["q"], opened, {}) == [0.0]  # a recipe's own value wins


def tiny_reward_model(tokenizer, num_labels=1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return LlamaForSequenceClassification(config).eval()


def test_best_of_n_with_a_tiny_reward_model(tokenizer):
    model = tiny_reward_model(tokenizer)
    verifier = RewardModelVerifier(model, tokenizer, batch_size=3)  # batches of different lengths, right-padded
    problems = ["what is 3 + 2?"] * 4
    scores = verifier(problems, CANDIDATES, {})
    with torch.no_grad():  # one unpadded forward per candidate
        direct = []
        for problem, completion in zip(problems, CANDIDATES):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": problem}, {"role": "assistant", "content": completion}], tokenize=False
            )
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            direct.append(float(model(input_ids=ids).logits[0, 0]))
    assert scores == pytest.approx(direct, abs=1e-5)
    assert len({round(s, 4) for s in scores}) == 4  # distinct, so the pick is meaningful
    verdicts = [float(i == max(range(4), key=direct.__getitem__)) for i in range(4)]  # only the argmax is "correct"
    assert best_of_n(scores, verdicts, 4) == 1.0
    assert best_of_n(scores, [1.0 - v for v in verdicts], 4) == 0.0


def test_reward_model_with_two_labels_scores_the_last_label(tokenizer):
    model = tiny_reward_model(tokenizer, num_labels=2)
    scores = RewardModelVerifier(model, tokenizer, batch_size=4)(["q"] * 2, CANDIDATES[:2], {})
    single = RewardModelVerifier(model, tokenizer, batch_size=1)(["q"] * 2, CANDIDATES[:2], {})
    assert all(s < 0 for s in scores) and scores == pytest.approx(single, abs=1e-5)  # log-probabilities


def test_self_verification_scores_p_yes_against_p_no(tiny_model, tokenizer):
    problems = ["what is 3 + 2?"] * 3
    batched = SelfVerifier(tiny_model, tokenizer, batch_size=3)(problems, CANDIDATES[:3], {})
    single = SelfVerifier(tiny_model, tokenizer, batch_size=1)(problems, CANDIDATES[:3], {})
    assert batched == pytest.approx(single, abs=1e-5)  # left padding with position ids changes nothing
    verifier = SelfVerifier(tiny_model, tokenizer)
    prompt = verifier.prompt.format(problem=problems[0], completion=CANDIDATES[0])
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])).logits[
            0, -1
        ]
    yes, no = logits[verifier.yes_id], logits[verifier.no_id]
    assert batched[0] == pytest.approx(float(torch.sigmoid(yes - no)), abs=1e-6)
    assert tokenizer.decode([verifier.yes_id]) == "Yes" and tokenizer.decode([verifier.no_id]) == "No"
    assert best_index(batched, 3) == max(range(3), key=batched.__getitem__)


def test_unknown_verifier():
    with pytest.raises(ValueError, match="unknown verifier"):
        build_verifier("oracle")


# --- lengths -------------------------------------------------------------------------------------------


def test_length_stats_by_hand():
    stats = length_stats([10, 20, 30, 40], [1.0, 0.0, 1.0, 0.0], [False, False, True, False])
    assert stats == {
        "completion_length/mean": 25.0,
        "completion_length/correct_mean": 20.0,
        "completion_length/incorrect_mean": 30.0,
        "truncated_frac": 0.25,
        "tokens_per_correct": 50.0,
    }
    none_correct = length_stats([5, 7], [0.0, 0.0], [True, True])
    assert none_correct["tokens_per_correct"] is None and none_correct["completion_length/correct_mean"] is None
