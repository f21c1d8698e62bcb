"""Test-time-compute metrics over the n samples of one problem: pass@k, mean@k, maj@k, best-of-N, lengths.

Conventions (every function here works on one problem; a benchmark score is the mean over problems):

* ``verdicts``: per sample, 1.0 correct / 0.0 wrong (the ``accuracy`` reward's values), in sample order.
* k <= n. ``pass_at_k`` is the unbiased estimator over all n samples. ``mean_at_k``, ``maj_at_k`` and
  ``best_of_n`` use the **first k samples** (samples are i.i.d., so this is an unbiased estimate of the
  expectation over k-subsets, with more variance than averaging over all subsets).
* Ties: a majority vote and a best-of-N choice go to the candidate that appears **earliest** in sample
  order (for maj@k: the equivalence class whose first member comes first). Self-consistency (Wang et al.
  2023) and DeepSeek-R1's cons@64 do not specify a rule; this one is deterministic and is what a vote
  with ``collections.Counter.most_common`` (first-inserted first among equal counts) gives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rewards.accuracy import read_gold, score_answers


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code", eq. 1 and its numerically stable form in Fig. 3):

        pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)

    Raises ``ValueError`` unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise ValueError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_at_k(verdicts: Sequence[float], k: int) -> float:
    """R1's pass@1 with k samples: the mean verdict of the first k samples (DeepSeek-AI 2025, "DeepSeek-R1",
    sec. 3: ``pass@1 = 1/k sum_i p_i``). With k = n it equals ``pass_at_k(n, c, 1) = c / n``.

    Raises ``ValueError`` unless 1 <= k <= len(verdicts).
    """
    if not 1 <= k <= len(verdicts):
        raise ValueError(f"mean_at_k needs 1 <= k <= {len(verdicts)} samples, got k={k}")
    return sum(float(v) for v in verdicts[:k]) / k


# --- majority vote over math-verify equivalence classes ----------------------------------------------


def answer_classes(answers: Sequence[str | None], *, timeout_seconds: float = 5.0) -> list[int | None]:
    """Group answers into equivalence classes, in sample order.

    Answer i joins the first existing class whose representative (its first member) it equals, else it
    opens a new class. Equality is ``rewards.accuracy``'s (:func:`rewards.score_answers` with the
    representative as the gold: the same normalised text, exact equality of numbers, else math-verify, so
    ``0.5`` and ``\\frac{1}{2}`` are one class), each comparison bounded by ``timeout_seconds`` (a timeout
    counts as "different"). The representative is math-verify's gold side (``verify`` is not symmetric).

    Returns:
        Per answer, its class index (0, 1, ... numbered by first appearance), or None when it cannot vote:
        None, empty, or not an answer the accuracy reward can score as a gold. The classes of the first k
        answers do not depend on the answers after them, so one call serves every k.
    """
    reps: list[tuple[str, str]] = []  # (normalised text, answer) of each class's first member
    classes: list[int | None] = []
    for answer in answers:
        read = read_gold(answer) if answer is not None and answer.strip() else None
        if read is None or score_answers([None], [answer], timeout_seconds=timeout_seconds) == [None]:
            classes.append(None)
            continue
        found = next((j for j, (text, _) in enumerate(reps) if text == read.raw), None)
        if found is None and reps:
            same = score_answers([answer] * len(reps), [rep for _, rep in reps], timeout_seconds=timeout_seconds)
            found = next((j for j, verdict in enumerate(same) if verdict == 1.0), None)
        if found is None:
            reps.append((read.raw, answer))
            found = len(reps) - 1
        classes.append(found)
    return classes


def majority_class(classes: Sequence[int | None], k: int) -> int | None:
    """The most voted class among the first k samples (None entries do not vote); ties go to the class
    whose first member appears earliest; None when nothing voted. Raises ``ValueError`` unless
    1 <= k <= len(classes)."""
    if not 1 <= k <= len(classes):
        raise ValueError(f"majority_class needs 1 <= k <= {len(classes)} samples, got k={k}")
    votes: dict[int, int] = {}
    for c in classes[:k]:
        if c is not None:
            votes[c] = votes.get(c, 0) + 1  # dicts keep first-appearance order
    if not votes:
        return None
    return max(votes, key=lambda c: (votes[c], -c))  # classes are numbered by first appearance


def maj_at_k_from_classes(classes: Sequence[int | None], verdicts: Sequence[float], k: int) -> float:
    """maj@k when the classes and per-sample verdicts are known: the verdict of the winning class's first
    member among the first k samples; 0.0 when no sample voted."""
    if len(classes) != len(verdicts):
        raise ValueError(f"{len(classes)} classes but {len(verdicts)} verdicts")
    winner = majority_class(classes, k)
    return 0.0 if winner is None else float(verdicts[list(classes).index(winner)])


def maj_at_k(answers: list[str | None], gold: str, k: int, *, timeout_seconds: float = 5.0) -> float:
    """Majority-vote accuracy over the first k answers (self-consistency, Wang et al. 2023; DeepSeek-R1's
    cons@64): 1.0 when the most voted equivalence class (:func:`answer_classes`; ties to the earliest
    class) equals ``gold``, else 0.0 (also when no answer could vote).

    Args:
        answers: extracted final answers (``rewards.extract_answer`` of each completion), None if none.
        gold: the gold answer (any form ``rewards.accuracy`` reads: ``"72"``, ``"#### 72"``, a boxed solution).
        k: how many of the answers vote, 1 <= k <= len(answers).
    Raises:
        ValueError: a bad k, or a gold answer that math-verify cannot read.
    """
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k needs 1 <= k <= {len(answers)} answers, got k={k}")
    if score_answers([None], [gold], timeout_seconds=timeout_seconds) == [None]:
        raise ValueError(f"the gold answer {gold!r} cannot be read by math-verify")
    classes = answer_classes(answers[:k], timeout_seconds=timeout_seconds)
    winner = majority_class(classes, k)
    if winner is None:
        return 0.0
    return score_answers([answers[classes.index(winner)]], [gold], timeout_seconds=timeout_seconds)[0] or 0.0


# --- best-of-N ---------------------------------------------------------------------------------------


def best_index(scores: Sequence[float | None], k: int) -> int | None:
    """Index of the highest verifier score among the first k samples (ties: the earliest; None and NaN
    scores are skipped); None when none of them has a score."""
    if not 1 <= k <= len(scores):
        raise ValueError(f"best_index needs 1 <= k <= {len(scores)} scores, got k={k}")
    best = None
    for i, s in enumerate(scores[:k]):
        if s is None or math.isnan(s):
            continue
        if best is None or s > scores[best]:
            best = i
    return best


def best_of_n(scores: Sequence[float | None], verdicts: Sequence[float], k: int) -> float:
    """Best-of-N accuracy with a verifier (Cobbe et al. 2021, "Training Verifiers to Solve Math Word
    Problems"; Lightman et al. 2023): the verdict of the first-k sample with the highest verifier score;
    0.0 when no sample has a score. Raises ``ValueError`` on misaligned inputs or a bad k."""
    if len(scores) != len(verdicts):
        raise ValueError(f"{len(scores)} scores but {len(verdicts)} verdicts")
    best = best_index(scores, k)
    return 0.0 if best is None else float(verdicts[best])


# --- lengths -----------------------------------------------------------------------------------------


def mean_or_none(values: Iterable[float]) -> float | None:
    """The arithmetic mean, or None when there are no values (None, not NaN: JSON has no NaN)."""
    values = list(values)
    return sum(values) / len(values) if values else None


def length_stats(
    lengths: Sequence[int], verdicts: Sequence[float], truncated: Sequence[bool]
) -> dict[str, float | None]:
    """Length statistics over samples (tokens), pooled over problems by the caller.

    Returns ``completion_length/mean``, ``completion_length/correct_mean`` and ``/incorrect_mean`` (None
    when no sample qualifies), ``truncated_frac`` (share that hit the length cap without EOS), and
    ``tokens_per_correct``: total tokens / number of correct samples, the overthinking measure of tokens
    spent per solved sample (cf. the overthinking study of Chen et al. 2024, "Do NOT Think That Much for
    2+3=?"); None when none is correct.
    """
    if not len(lengths) == len(verdicts) == len(truncated):
        raise ValueError(f"misaligned inputs: {len(lengths)} lengths, {len(verdicts)} verdicts, {len(truncated)} flags")
    correct = [n for n, v in zip(lengths, verdicts) if v >= 1.0]
    return {
        "completion_length/mean": mean_or_none(lengths),
        "completion_length/correct_mean": mean_or_none(correct),
        "completion_length/incorrect_mean": mean_or_none(n for n, v in zip(lengths, verdicts) if v < 1.0),
        "truncated_frac": mean_or_none(float(bool(t)) for t in truncated),
        "tokens_per_correct": sum(lengths) / len(correct) if correct else None,
    }


def k_values(n: int) -> list[int]:
    """The k of the accuracy-against-k curves: 1, 2, 4, ... up to n, and n itself."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]
