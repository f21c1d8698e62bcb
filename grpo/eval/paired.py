"""Paired comparison of two evaluations on the same problems (a model before and after training).

Each problem's score is its accuracy over its K samples (pass@1 of that problem; with K = 1 and greedy decoding,
0 or 1). Two runs are compared on the problems both verified: the difference of the means (after minus before)
and a percentile bootstrap confidence interval over problems (Efron and Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 13): problems are resampled with replacement, the same resample for both runs, so the pairing
(each problem's own difficulty) is kept and the interval is narrower than two independent ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

SAMPLES_FILE = "samples.jsonl"


def problem_accuracies(records: list[dict]) -> dict[tuple, float]:
    """``{(benchmark, budget, index): accuracy over the problem's samples}`` for every verifiable problem (a
    record whose ``metrics`` is not None; see :mod:`grpo.eval.runner` for the record format)."""
    out = {}
    for r in records:
        if r.get("metrics") is None:
            continue
        verdicts = [float(s["correct"]) for s in r["samples"]]
        out[(r["benchmark"], r["budget"], r["index"])] = sum(verdicts) / len(verdicts)
    return out


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, num_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem, e.g. a paired difference).

    Draws ``num_resamples`` resamples of len(values) with replacement (numpy, seeded: the same inputs give the
    same interval) and returns the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of their means.
    Raises ``ValueError`` for fewer than 2 values or a confidence outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 values, got {len(x)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, 1000):  # [chunk, n] index draws, bounded memory
        stop = min(start + 1000, num_resamples)
        means[start:stop] = x[rng.integers(0, len(x), size=(stop - start, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_comparison(before: list[dict], after: list[dict], **bootstrap) -> list[dict]:
    """One result per benchmark (and budget) present in both record lists, on the problems both verified:
    ``num_problems``, ``before`` and ``after`` (mean accuracy), ``difference`` (after - before) and its
    ``ci_low``/``ci_high`` (:func:`bootstrap_interval` of the per-problem differences), plus each run's own
    interval (``before_ci``, ``after_ci``). Accuracies are fractions in [0, 1].
    Raises ``ValueError`` when the runs share fewer than 2 problems."""
    a, b = problem_accuracies(before), problem_accuracies(after)
    groups: dict[tuple, list[tuple]] = {}
    for key in sorted(a.keys() & b.keys(), key=lambda k: (k[0], str(k[1]), k[2])):
        groups.setdefault(key[:2], []).append(key)
    if not groups:
        raise ValueError("the two evaluations share no verified problem")
    results = []
    for (benchmark, budget), keys in groups.items():
        x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
        low, high = bootstrap_interval(y - x, **bootstrap)
        results.append(
            {
                "benchmark": benchmark,
                "budget": budget,
                "num_problems": len(keys),
                "num_samples": max(len(r["samples"]) for r in after),
                "before": float(x.mean()),
                "after": float(y.mean()),
                "before_ci": bootstrap_interval(x, **bootstrap),
                "after_ci": bootstrap_interval(y, **bootstrap),
                "difference": float((y - x).mean()),
                "ci_low": low,
                "ci_high": high,
            }
        )
    return results


def read_samples(out_dir: str) -> list[dict]:
    """The records of a ``grpo eval --out_dir`` folder. Raises ``FileNotFoundError`` naming the missing file."""
    path = os.path.join(out_dir, SAMPLES_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run grpo eval --out_dir {out_dir} first")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def paired_table(before_dir: str, after_dirs: list[str], labels: list[str] | None = None) -> str:
    """A Markdown table comparing ``after_dirs`` each with ``before_dir`` (percentage points, 95% intervals)."""
    labels = labels or [os.path.basename(os.path.normpath(d)) for d in after_dirs]
    base = read_samples(before_dir)
    lines = [
        "| run | benchmark | problems | K | before % [95% CI] | after % [95% CI] | difference, points [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, after_dir in zip(labels, after_dirs):
        for r in paired_comparison(base, read_samples(after_dir)):
            name = r["benchmark"] + ("" if r["budget"] is None else f" (budget {r['budget']})")
            lines.append(
                f"| {label} | {name} | {r['num_problems']} | {r['num_samples']} "
                f"| {_pct(r['before'], r['before_ci'])} | {_pct(r['after'], r['after_ci'])} "
                f"| {100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] |"
            )
    return "\n".join(lines) + "\n"


def _pct(mean: float, ci: tuple[float, float]) -> str:
    return f"{100 * mean:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
