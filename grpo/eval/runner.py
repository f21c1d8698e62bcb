"""Benchmark evaluation with test-time compute: sample K completions per problem (optionally under a
thinking budget), score them, vote, verify, and write one record per problem.

A record (one JSON line of ``samples.jsonl``)::

    {"benchmark", "budget", "index", "problem", "gold", "majority_answer",
     "samples": [{"completion", "answer", "correct", "class", "tokens", "thinking_tokens", "truncated",
                  "waits", "forced_close", "scores": {verifier: score}}],
     "metrics": {"pass@k", "maj@k", "bon@k/<verifier>" for k in 1, 2, 4, ..., K} or null (unverifiable gold)}

Records are appended and flushed problem by problem, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from grpo.eval.metrics import answer_classes, best_of_n, k_values, maj_at_k_from_classes, majority_class, pass_at_k
from grpo.eval.thinking_budget import Generation, ThinkingBudget, generate_plain, generate_with_budget
from grpo.eval.verifiers import Verifier
from grpo.samplers import Sampler, SamplingConfig
from grpo.scoring import reward_columns
from rewards.extract import extract_answer

SKIPPED_COLUMNS = ("prompt_ids", "prompt", "benchmark", "index")  # not passed to rewards as columns


@dataclass
class EvalSettings:
    """Sampling and budget settings of a benchmark run (R1's sampling defaults: temperature 0.6, top-p 0.95).

    ``budgets``: thinking budgets in tokens (None = no budget: plain sampling up to ``max_completion_length``).
    ``min_thinking_tokens``: s1's minimum, an int (clipped to each budget) or ``"budget"`` (= the budget).
    ``max_answer_tokens``: answer cap after the thinking block (None: ``max_completion_length``).
    ``batch_size``: sequences (prompts x K) per ``generate`` call.
    """

    num_samples: int = 1
    max_completion_length: int = 1024
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    budgets: tuple[int | None, ...] = (None,)
    min_thinking_tokens: int | str = 0
    max_waits: int | None = None
    max_answer_tokens: int | None = None
    close_text: str = "\n</think>\n"
    wait_text: str = "Wait"
    batch_size: int = 64
    timeout_seconds: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_completion_length < 1 or self.batch_size < 1:
            raise ValueError("num_samples, max_completion_length and batch_size must be >= 1")
        if self.min_thinking_tokens != "budget" and not isinstance(self.min_thinking_tokens, int):
            raise ValueError(f"min_thinking_tokens must be an int or 'budget', got {self.min_thinking_tokens!r}")
        self.budgets = tuple(self.budgets)

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(self.max_completion_length, self.temperature, self.top_p, self.top_k)

    def thinking_budget(self, budget: int | None) -> ThinkingBudget | None:
        """The :class:`ThinkingBudget` of one sweep point (None for no budget)."""
        if budget is None:
            return None
        minimum = budget if self.min_thinking_tokens == "budget" else min(int(self.min_thinking_tokens), budget)
        return ThinkingBudget(
            budget,
            minimum,
            self.max_answer_tokens or self.max_completion_length,
            self.max_waits,
            close_text=self.close_text,
            wait_text=self.wait_text,
        )


def sample_rows(
    sampler: Sampler, tokenizer, rows: list[dict], settings: EvalSettings, budget: int | None
) -> list[list[Generation]]:
    """K generations for each row (one batch: ``len(rows) * K`` sequences)."""
    k, prompts = settings.num_samples, [r["prompt_ids"] for r in rows]
    thinking = settings.thinking_budget(budget)
    flat = (
        generate_plain(sampler, tokenizer, prompts, k)
        if thinking is None
        else generate_with_budget(sampler, tokenizer, prompts, k, thinking)
    )
    return [flat[i * k : (i + 1) * k] for i in range(len(rows))]


def problem_metrics(
    verdicts: list[float], classes: list[int | None], scores: dict[str, list], ks: list[int]
) -> dict[str, float]:
    """``pass@k`` (unbiased, all n samples), ``maj@k`` and ``bon@k/<verifier>`` (first k samples) of one
    problem for every k in ``ks``."""
    n, c = len(verdicts), sum(v >= 1.0 for v in verdicts)
    out = {}
    for k in ks:
        out[f"pass@{k}"] = pass_at_k(n, c, k)
        out[f"maj@{k}"] = maj_at_k_from_classes(classes, verdicts, k)
        for name, s in scores.items():
            out[f"bon@{k}/{name}"] = best_of_n(s, verdicts, k)
    return out


def verified_metrics(verdicts: list, classes: list[int | None], scores: dict[str, list]) -> dict[str, float] | None:
    """:func:`problem_metrics` at every k of :func:`k_values`, or None when a verdict is None (the gold answer
    cannot be verified)."""
    if any(v is None for v in verdicts):
        return None
    return problem_metrics([float(v) for v in verdicts], classes, scores, k_values(len(verdicts)))


def problem_record(
    row: dict,
    generations: list[Generation],
    verdicts: list,
    scores: dict[str, list],
    budget: int | None,
    timeout_seconds: float = 5.0,
) -> dict:
    """The record of one problem (see the module docstring); ``metrics`` is None when a verdict is None
    (the gold answer cannot be verified)."""
    answers = [extract_answer(g.completion) for g in generations]
    classes = answer_classes(answers, timeout_seconds=timeout_seconds)
    winner = majority_class(classes, len(classes))
    samples = [
        {
            "completion": g.completion,
            "answer": a,
            "correct": v,
            "class": c,
            "tokens": g.num_tokens,
            "thinking_tokens": g.thinking_tokens,
            "truncated": g.truncated,
            "waits": g.waits,
            "forced_close": g.forced_close,
            "scores": {n: s[i] for n, s in scores.items()},
        }
        for i, (g, a, v, c) in enumerate(zip(generations, answers, verdicts, classes))
    ]
    return {
        "benchmark": row["benchmark"],
        "budget": budget,
        "index": row["index"],
        "problem": row["problem"],
        "gold": row["solution"],
        "majority_answer": None if winner is None else answers[classes.index(winner)],
        "metrics": verified_metrics(verdicts, classes, scores),
        "samples": samples,
    }


def score_batch(
    rows: list[dict],
    generations: list[list[Generation]],
    correctness: Callable,
    verifiers: dict[str, Verifier],
    budget: int | None,
    timeout_seconds: float = 5.0,
) -> list[dict]:
    """Records of a batch of problems: verdicts from ``correctness`` (a reward in TRL's convention, e.g.
    ``accuracy``), verifier scores computed over the whole batch at once."""
    flat_rows = [r for r, gens in zip(rows, generations) for _ in gens]
    flat = [g for gens in generations for g in gens]
    completions = [g.completion for g in flat]
    columns = reward_columns(flat_rows, [g.completion_ids for g in flat], [g.truncated for g in flat], SKIPPED_COLUMNS)
    verdicts = correctness(completions, **columns)
    problems = [r["problem"] for r in flat_rows]
    scores = {name: verify(problems, completions, columns) for name, verify in verifiers.items()}
    records, start = [], 0
    for row, gens in zip(rows, generations):
        part = slice(start, start + len(gens))
        records.append(
            problem_record(row, gens, verdicts[part], {n: s[part] for n, s in scores.items()}, budget, timeout_seconds)
        )
        start += len(gens)
    return records


def rescore_record(record: dict, row: dict, verifiers: dict[str, Verifier], tokenizer) -> dict:
    """``record`` (a full one, with completion texts) with its samples' ``scores`` replaced by ``verifiers``'
    scores and its metrics recomputed from the stored verdicts and answer classes. ``completion_ids`` reach
    the verifiers re-encoded from the stored text (the sampled ids are not stored)."""
    samples = record["samples"]
    n, completions = len(samples), [s["completion"] for s in samples]
    columns = reward_columns(
        [row] * n,
        [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions],
        [s["truncated"] for s in samples],
        SKIPPED_COLUMNS,
    )
    scores = {name: verify([row["problem"]] * n, completions, columns) for name, verify in verifiers.items()}
    for i, s in enumerate(samples):
        s["scores"] = {name: v[i] for name, v in scores.items()}
    record["metrics"] = verified_metrics([s["correct"] for s in samples], [s["class"] for s in samples], scores)
    return record


def rescore(
    samples_path: str, rows_by_benchmark: dict[str, list[dict]], verifiers: dict[str, Verifier], tokenizer
) -> list[dict]:
    """Score the stored completions of ``samples_path`` again with ``verifiers`` (:func:`rescore_record`),
    without sampling: for a verifier added, or fixed, after an expensive run. The file is rewritten through a
    temporary file and a rename, so a crash leaves the old one whole. Returns the records without completion
    texts (:func:`light`). Raises ``ValueError`` naming FILE:LINE when a record's problem is not among
    ``rows_by_benchmark`` (run with other ``--benchmarks``, ``--limit`` or ``--levels``)."""
    rows = {(name, r["index"]): r for name, rs in rows_by_benchmark.items() for r in rs}
    records, tmp = [], samples_path + ".rescore.tmp"
    try:
        with open(samples_path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as sink:
            for line_no, line in enumerate(src, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                row = rows.get((record["benchmark"], record["index"]))
                if row is None:
                    raise ValueError(
                        f"{samples_path}:{line_no}: problem {record['index']} of {record['benchmark']} "
                        "is not among the selected problems (other --benchmarks, --limit, --levels?)"
                    )
                record = rescore_record(record, row, verifiers, tokenizer)
                sink.write(json.dumps(record) + "\n")
                records.append(light(record))
    except BaseException:
        os.remove(tmp)
        raise
    os.replace(tmp, samples_path)
    return records


def record_key(record: dict) -> tuple:
    return record["benchmark"], record["budget"], record["index"]


def light(record: dict) -> dict:
    """The record without its completion texts (all a summary needs): long runs keep only these in memory."""
    return {**record, "samples": [{k: v for k, v in s.items() if k != "completion"} for s in record["samples"]]}


def read_records(path: str) -> list[dict]:
    """Records already in ``path`` (none if absent), without their completion texts (:func:`light`), read
    line by line; a torn last line (a crash mid-write) is cut off the file. Raises ``ValueError`` on a bad
    line elsewhere."""
    if not os.path.isfile(path):
        return []
    records, torn, offset = [], None, 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if torn is not None and line.strip():
                raise ValueError(f"{path}:{torn[0]}: invalid JSON")
            try:
                if line.strip():
                    records.append(light(json.loads(line)))
            except json.JSONDecodeError:
                torn = (line_no, offset)
            offset += len(line)
    if torn is not None:
        with open(path, "r+b") as f:
            f.truncate(torn[1])
    return records


def run_benchmarks(
    sampler: Sampler,
    tokenizer,
    rows_by_benchmark: dict[str, list[dict]],
    correctness: dict[str, Callable],
    verifiers: dict[str, Verifier],
    settings: EvalSettings,
    samples_path: str,
) -> list[dict]:
    """Evaluate every benchmark at every budget, appending records to ``samples_path`` and skipping problems
    already there (resume). Returns the records of the selected problems, in order, without completion texts."""
    done = {record_key(r): r for r in read_records(samples_path)}
    per_call = max(1, settings.batch_size // settings.num_samples)
    with open(samples_path, "a", encoding="utf-8") as sink:
        for budget in settings.budgets:
            for name, rows in rows_by_benchmark.items():
                todo = [r for r in rows if (name, budget, r["index"]) not in done]
                for i in range(0, len(todo), per_call):
                    batch = todo[i : i + per_call]
                    generations = sample_rows(sampler, tokenizer, batch, settings, budget)
                    for record in score_batch(
                        batch, generations, correctness[name], verifiers, budget, settings.timeout_seconds
                    ):
                        sink.write(json.dumps(record) + "\n")
                        done[record_key(record)] = light(record)
                    sink.flush()
                    print(
                        f"[{name} budget={budget}] {min(i + per_call, len(todo))}/{len(todo)} problems",
                        file=sys.stderr,
                        flush=True,
                    )
    return [
        done[(name, b, r["index"])] for b in settings.budgets for name, rows in rows_by_benchmark.items() for r in rows
    ]
