"""Evaluation outputs: the summary of per-problem records, a Markdown table and PNG plots.

``summarize`` gives one result per (benchmark, budget): the mean over verifiable problems of every
per-problem metric (``pass@k``, ``maj@k``, ``bon@k/<verifier>``), plus length statistics pooled over all
samples (see :func:`grpo.eval.metrics.length_stats`) and thinking statistics.
"""

from __future__ import annotations

import json
import math
import os
import re

from grpo.eval.metrics import length_stats, mean_or_none
from grpo.io import write_json

SUMMARY_FILE, TABLE_FILE = "summary.json", "summary.md"
K_PLOT, BUDGET_PLOT = "accuracy_vs_k.png", "accuracy_vs_budget.png"
_METRIC_RE = re.compile(r"^(pass|maj|bon)@(\d+)(?:/(.+))?$")


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of per-problem values (sample standard deviation / sqrt(n)); None for n < 2.
    For pass@1 the values are each problem's mean over its K samples, so the K samples of a problem count once
    (Miller 2024, "Adding Error Bars to Evals", arXiv:2411.00640, Sec. 2 and the clustered case)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def summarize_group(records: list[dict]) -> dict:
    """One result from the records of one (benchmark, budget): the mean of every per-problem metric,
    ``pass@1_stderr`` (:func:`standard_error`), ``score/<verifier>`` (mean verifier score over samples) and
    the length figures of :func:`grpo.eval.metrics.length_stats`."""
    scored = [r for r in records if r["metrics"] is not None]
    samples = [s for r in scored for s in r["samples"]]
    result = {
        "benchmark": records[0]["benchmark"],
        "budget": records[0]["budget"],
        "num_problems": len(scored),
        "num_unverifiable": len(records) - len(scored),
        "num_samples": len(records[0]["samples"]),
    }
    keys = list(scored[0]["metrics"]) if scored else []
    result.update({k: mean_or_none([r["metrics"][k] for r in scored]) for k in keys})
    if scored:
        result["pass@1_stderr"] = standard_error([r["metrics"]["pass@1"] for r in scored])
    for name in sorted({v for s in samples for v in s.get("scores", {})}):
        result[f"score/{name}"] = mean_or_none(
            [s["scores"][name] for s in samples if s["scores"].get(name) is not None]
        )
    if samples:
        result.update(
            length_stats(
                [s["tokens"] for s in samples],
                [float(s["correct"]) for s in samples],
                [s["truncated"] for s in samples],
            )
        )
        result.update(
            {
                "thinking_tokens/mean": mean_or_none([s["thinking_tokens"] for s in samples]),
                "waits/mean": mean_or_none([s["waits"] for s in samples]),
                "forced_close_frac": mean_or_none([float(s["forced_close"]) for s in samples]),
            }
        )
    return result


def summarize(records: list[dict]) -> list[dict]:
    """Results per (benchmark, budget), in the order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["benchmark"], r["budget"]), []).append(r)
    return [summarize_group(g) for g in groups.values()]


def _fmt(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.1f}"
    return f"{value:.0f}" if isinstance(value, (int, float)) else str(value)


def markdown_table(results: list[dict], labels: list[str] | None = None) -> str:
    """A Markdown table: one row per (benchmark, budget); accuracies in percent at k = 1 (with its standard
    error) and k = K, mean verifier scores, lengths in tokens. ``labels``: a first column naming each row's
    run (for :func:`compare_table`)."""
    verifiers = sorted({m.group(3) for r in results for key in r if (m := _METRIC_RE.match(key)) and m.group(3)})
    header = [
        *(["run"] if labels else []),
        "benchmark",
        "budget",
        "problems",
        "K",
        "pass@1",
        "± s.e.",
        "pass@K",
        "maj@K",
        *[f"bon@K {v}" for v in verifiers],
        *[f"mean {v}" for v in verifiers],
        "tokens",
        "tokens (correct)",
        "tokens (incorrect)",
        "thinking",
        "truncated %",
        "tokens / correct",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for i, r in enumerate(results):
        k = r["num_samples"]
        cells = [
            *([labels[i]] if labels else []),
            r["benchmark"],
            _fmt(r["budget"]) if r["budget"] is not None else "none",
            str(r["num_problems"]),
            str(k),
            _fmt(r.get("pass@1"), True),
            _fmt(r.get("pass@1_stderr"), True),
            _fmt(r.get(f"pass@{k}"), True),
            _fmt(r.get(f"maj@{k}"), True),
            *[_fmt(r.get(f"bon@{k}/{v}"), True) for v in verifiers],
            *["-" if r.get(f"score/{v}") is None else f"{r[f'score/{v}']:.2f}" for v in verifiers],
            _fmt(r.get("completion_length/mean")),
            _fmt(r.get("completion_length/correct_mean")),
            _fmt(r.get("completion_length/incorrect_mean")),
            _fmt(r.get("thinking_tokens/mean")),
            _fmt(r.get("truncated_frac"), True),
            _fmt(r.get("tokens_per_correct")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_table(out_dirs: list[str], labels: list[str] | None = None) -> str:
    """One Markdown table of the results of several ``grpo eval`` output folders (e.g. a model before and
    after training), read from their ``summary.json``; rows labelled by ``labels`` (default: the folder names).
    Raises ``FileNotFoundError`` naming a folder without ``summary.json`` and ``ValueError`` when the number of
    labels differs from the number of folders."""
    labels = labels or [os.path.basename(os.path.normpath(d)) for d in out_dirs]
    if len(labels) != len(out_dirs):
        raise ValueError(f"{len(labels)} labels for {len(out_dirs)} folders")
    results, row_labels = [], []
    for out_dir, label in zip(out_dirs, labels):
        path = os.path.join(out_dir, SUMMARY_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: run grpo eval --out_dir {out_dir} first")
        with open(path, encoding="utf-8") as f:
            found = json.load(f)["results"]
        results += found
        row_labels += [label] * len(found)
    return markdown_table(results, row_labels)


def curves_against_k(result: dict) -> dict[str, list[tuple[int, float]]]:
    """``{"pass@k": [(k, accuracy)], "maj@k": [...], "bon@k/<verifier>": [...]}`` of one result."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for key, value in result.items():
        m = _METRIC_RE.match(key)
        if m and value is not None:
            name = f"{m.group(1)}@k" + (f"/{m.group(3)}" if m.group(3) else "")
            curves.setdefault(name, []).append((int(m.group(2)), value))
    return {name: sorted(points) for name, points in curves.items()}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_ylim(percents: list[float]) -> tuple[float, float]:
    """The y range (%) of an accuracy plot: 0-100 when any value is above 40, else zoomed to 1.25 x the
    largest value (at least 0-5), so a small model's few percent are not a flat line at the bottom."""
    top = max(percents, default=0.0)
    if top > 40:
        return -3.0, 103.0
    top = max(5.0, 1.25 * top)
    return -0.03 * top, top


def plot_accuracy_vs_k(results: list[dict], path: str) -> None:
    """A grid of panels, one row per budget and one column per benchmark: pass@k, maj@k and best-of-N
    accuracy (%) against k (log2 axis)."""
    plt = _pyplot()
    names = list(dict.fromkeys(r["benchmark"] for r in results))
    budgets = list(dict.fromkeys(r["budget"] for r in results))
    fig, axes = plt.subplots(len(budgets), len(names), figsize=(4.5 * len(names), 3.6 * len(budgets)), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for result in results:
        ax = axes[budgets.index(result["budget"])][names.index(result["benchmark"])]
        ax.set_visible(True)
        for name, points in curves_against_k(result).items():
            ax.plot([k for k, _ in points], [100 * a for _, a in points], marker="o", label=name)
        ks = sorted({k for points in curves_against_k(result).values() for k, _ in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        budget = "" if result["budget"] is None else f", budget {result['budget']}"
        percents = [100 * a for points in curves_against_k(result).values() for _, a in points]
        ax.set(
            title=f"{result['benchmark']}{budget}",
            xlabel="k (samples)",
            ylabel="accuracy (%)",
            ylim=accuracy_ylim(percents),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_budget(results: list[dict], path: str) -> None:
    """pass@1 (%) with its standard error as error bars against the mean thinking tokens actually spent, one
    line per benchmark, one point per budget (labelled with the budget)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    tops = []
    for name in dict.fromkeys(r["benchmark"] for r in results):
        points = sorted(
            (r["thinking_tokens/mean"], 100 * r["pass@1"], r["budget"], 100 * (r.get("pass@1_stderr") or 0))
            for r in results
            if r["benchmark"] == name and None not in (r.get("pass@1"), r.get("thinking_tokens/mean"))
        )
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[3] for p in points],
            marker="o",
            capsize=3,
            label=name,
        )
        tops += [p[1] + p[3] for p in points]
        for x, y, budget, _ in points:
            ax.annotate(
                "none" if budget is None else str(budget), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    xs = [r["thinking_tokens/mean"] for r in results if r.get("thinking_tokens/mean")]
    if xs and max(xs) >= 4 * min(xs):
        from matplotlib.ticker import ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 32, 64, 128 rather than 2^5, 2^6, 2^7
    ax.set(
        xlabel="mean thinking tokens",
        ylabel="pass@1 (%)",
        title="accuracy against thinking budget",
        ylim=accuracy_ylim(tops),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: str, records: list[dict], settings: dict) -> dict[str, str]:
    """Write ``summary.json`` (settings and results), ``summary.md`` and the PNG plots (the budget plot only
    when a budget was set). Returns ``{kind: path}`` of the files written."""
    results = summarize(records)
    paths = {
        "summary": os.path.join(out_dir, SUMMARY_FILE),
        "table": os.path.join(out_dir, TABLE_FILE),
        "k_plot": os.path.join(out_dir, K_PLOT),
    }
    write_json(paths["summary"], {"settings": settings, "results": results})
    with open(paths["table"], "w", encoding="utf-8") as f:
        f.write(markdown_table(results))
    plot_accuracy_vs_k(results, paths["k_plot"])
    if any(r["budget"] is not None for r in results):
        paths["budget_plot"] = os.path.join(out_dir, BUDGET_PLOT)
        plot_accuracy_vs_budget(results, paths["budget_plot"])
    return paths
