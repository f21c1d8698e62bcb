"""``grpo plot OUTPUT_DIR``: pictures of learning, as PNG files, from a training run's ``metrics.jsonl``.

``grpo plot OUTPUT_DIR [--eval LABEL=PATH ...] [--out DIR] [--smoothing W]`` writes into ``DIR`` (default
``OUTPUT_DIR/plots``):

* ``curves.png``: one panel per quantity the run logged (reward and each reward function, accuracy, completion
  length with its correct/incorrect split, truncated share, KL, entropy, zero-std share, the curriculum's
  counts), each smoothed with a debiased exponential moving average of weight ``W`` (TensorBoard's smoothing)
  over the raw values drawn faint. Absent keys are skipped; steps logged again after a rollback or a resume
  replace the earlier ones and are marked with a dashed line. Each panel also goes to ``<panel>.png``.
* ``heldout_accuracy.png`` with ``--eval``: held-out accuracy of each labelled evaluation, with 95% error bars
  (1.96 standard errors over problems, :func:`grpo.eval.report.standard_error`). ``PATH`` is a per-problem
  JSONL from ``grpo eval RECIPE --model M --out FILE`` (accuracy: the correctness reward >= 1, as in
  :func:`grpo.train_metrics.correct_mask`) or a ``grpo eval --benchmarks ... --out_dir`` folder (its
  ``summary.json``: pass@1 and its standard error per benchmark). With two or more JSONL files that share
  problems, the title gives the paired difference of the last and the first with a paired bootstrap 95%
  interval (:func:`paired_bootstrap`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from grpo.eval.paired import SAMPLES_FILE, bootstrap_interval, problem_accuracies, read_samples
from grpo.eval.report import SUMMARY_FILE, _pyplot, accuracy_ylim, standard_error
from grpo.io import read_jsonl
from grpo.train_metrics import CORRECTNESS_REWARDS

METRICS_FILE = "metrics.jsonl"
CURVES_FILE, EVAL_FILE = "curves.png", "heldout_accuracy.png"
Z95 = 1.959964  # two-sided 95% quantile of the standard normal


def _reward_keys(keys: list[str]) -> list[tuple[str, str]]:
    """The total and ``rewards/<name>`` (not ``rewards/<name>/time_s`` and other per-reward statistics)."""
    names = [k for k in keys if k.startswith("rewards/") and k.count("/") == 1]
    return [("reward", "total (weighted)")] + [(k, k.split("/", 1)[1]) for k in names]


def _accuracy_keys(keys: list[str]) -> list[tuple[str, str]]:
    found = [(f"rewards/{n}", f"{n} (training samples)") for n in CORRECTNESS_REWARDS if f"rewards/{n}" in keys][:1]
    return found + [(k, f"{k.split('/')[1]} {k.rsplit('/', 1)[1]} (held out)") for k in keys if k.endswith("/pass@1")]


# (file stem, title, y label, series (key, legend) from the logged keys, y in percent)
PANELS = [
    ("reward", "reward", "mean reward", _reward_keys, False),
    ("accuracy", "accuracy", "correct (%)", _accuracy_keys, True),
    (
        "completion_length",
        "completion length",
        "tokens",
        lambda keys: [
            ("completion_length/mean", "all"),
            ("completion_length/correct_mean", "correct"),
            ("completion_length/incorrect_mean", "incorrect"),
        ],
        False,
    ),
    ("truncated", "truncated completions", "share (%)", lambda keys: [("truncated_frac", "truncated")], True),
    ("kl", "KL to the reference", "nats / token", lambda keys: [("kl", "KL")], False),
    ("entropy", "entropy", "nats / token", lambda keys: [("entropy", "entropy")], False),
    ("zero_std", "groups with equal rewards", "share (%)", lambda keys: [("zero_std_frac", "zero std")], True),
    (
        "curriculum_draws",
        "curriculum: candidates per rollout",
        "prompts",
        lambda keys: [(f"curriculum/{k}", k) for k in ("skipped", "revisited", "forced")],
        False,
    ),
    (
        "curriculum_prompts",
        "curriculum: prompts by pass rate",
        "prompts",
        lambda keys: [(f"curriculum/{k}_prompts", k.replace("_", " ")) for k in ("active", "too_easy", "too_hard")],
        False,
    ),
]


def load_metrics(output_dir: str) -> tuple[list[dict], list[int]]:
    """The records of ``OUTPUT_DIR/metrics.jsonl`` along the run's final path, and the steps where it went back.

    A record whose step is not above the previous one (a rollback, or a resumed run logging steps again)
    replaces the records from that step on. Raises ``FileNotFoundError`` naming the file when it is missing,
    ``ValueError`` naming the file (and line) when it is unreadable or empty.
    """
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: OUTPUT_DIR must be the output_dir of a grpo train run")
    kept, restarts = [], []
    for line, record in read_jsonl(path):
        if not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{line}: no integer 'step'")
        if kept and kept[-1]["step"] >= record["step"]:
            restarts.append(record["step"])
            while kept and kept[-1]["step"] >= record["step"]:
                kept.pop()
        kept.append(record)
    if not kept:
        raise ValueError(f"{path} holds no records")
    return kept, restarts


def smooth(values: list[float | None], weight: float) -> list[float | None]:
    """Debiased exponential moving average: ``avg = weight * avg + (1 - weight) * x`` over the present values,
    divided by ``1 - weight ** n`` (Kingma & Ba 2015, Adam's bias correction); None stays None."""
    out, avg, n = [], 0.0, 0
    for value in values:
        if value is None:
            out.append(None)
            continue
        n += 1
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight**n))
    return out


def _series(records: list[dict], key: str, percent: bool) -> tuple[list[int], list[float | None]]:
    scale = 100.0 if percent else 1.0
    values = [r.get(key) for r in records]
    values = [v * scale if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]
    return [r["step"] for r in records], values


def draw_panel(ax, records: list[dict], panel: tuple, restarts: list[int], weight: float) -> bool:
    """Draw one panel of :data:`PANELS` on ``ax``; False (nothing drawn) when none of its keys has a value."""
    from matplotlib.ticker import MaxNLocator

    _, title, ylabel, series_of, percent = panel
    keys = list(dict.fromkeys(k for r in records for k in r))
    drawn = []
    for i, (key, label) in enumerate(series_of(keys)):
        steps, values = _series(records, key, percent)
        points = [(s, v) for s, v in zip(steps, values) if v is not None]
        if not points:
            continue
        color = f"C{i}"
        ax.plot([s for s, _ in points], [v for _, v in points], color=color, alpha=0.25, linewidth=1)
        smoothed = [(s, v) for s, v in zip(steps, smooth(values, weight)) if v is not None]
        marker = "o" if len(points) < 3 else None  # a lone point shows
        ax.plot([s for s, _ in smoothed], [v for _, v in smoothed], color=color, label=label, marker=marker)
        drawn += [v for _, v in points]
    if not drawn:
        return False
    for step in restarts:
        ax.axvline(step, color="grey", linestyle="--", linewidth=0.8)
    if percent:
        ax.set_ylim(*accuracy_ylim(drawn))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.ticklabel_format(axis="y", useOffset=False)  # 10.7899, not 1e-5 + 1.07898e1
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return True


def plot_curves(records: list[dict], restarts: list[int], out_dir: str, weight: float = 0.8) -> list[str]:
    """Write ``curves.png`` (every panel with data, 3 a row) and ``<panel>.png`` per panel; returns the paths."""
    plt = _pyplot()
    paths = []
    present = []
    for panel in PANELS:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        if draw_panel(ax, records, panel, restarts, weight):
            present.append(panel)
            fig.tight_layout()
            paths.append(os.path.join(out_dir, f"{panel[0]}.png"))
            fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    rows = math.ceil(len(present) / 3)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, present):
        draw_panel(ax, records, panel, restarts, weight)
    for ax in list(axes.flat)[len(present) :]:
        ax.set_visible(False)
    fig.suptitle(f"training curves (EMA {weight}; raw values faint)", fontsize=10)
    fig.tight_layout()
    paths.insert(0, os.path.join(out_dir, CURVES_FILE))
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    return paths


# --- held-out evaluations ---------------------------------------------------------------------------------------


def load_eval(path: str) -> list[dict]:
    """Results of one evaluation: ``[{"benchmark", "accuracy", "stderr", "num_problems", "per_problem"}]``
    (accuracy as a share; ``per_problem``: {problem: 0/1} for a JSONL file, None for a summary). Raises
    ``FileNotFoundError`` / ``ValueError`` naming the file."""
    if os.path.isdir(path):
        path = os.path.join(path, SUMMARY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (--eval takes a grpo eval --out JSONL file or --out_dir folder)")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            results = json.load(f)["results"]
        samples = os.path.join(os.path.dirname(path), SAMPLES_FILE)  # per problem, when the folder has them
        per_problem = problem_accuracies(read_samples(os.path.dirname(path))) if os.path.isfile(samples) else None
        return [
            {
                "benchmark": r["benchmark"] + ("" if r.get("budget") is None else f" (budget {r['budget']})"),
                "accuracy": r["pass@1"],
                "stderr": r.get("pass@1_stderr"),
                "num_problems": r["num_problems"],
                "per_problem": None
                if per_problem is None
                else {k: v for k, v in per_problem.items() if k[:2] == (r["benchmark"], r.get("budget"))},
            }
            for r in results
        ]
    rows = [row for _, row in read_jsonl(path)]
    key = next((n for n in CORRECTNESS_REWARDS if rows and n in rows[0]), None)
    if key is None:
        raise ValueError(f"{path}: no correctness column ({', '.join(CORRECTNESS_REWARDS)}) in its records")
    per_problem = {r["problem"]: float(r[key] >= 1.0) for r in rows if r.get(key) is not None}
    values = list(per_problem.values())
    if not values:
        raise ValueError(f"{path}: no verifiable record")
    return [
        {
            "benchmark": "held-out",
            "accuracy": sum(values) / len(values),
            "stderr": standard_error(values),
            "num_problems": len(values),
            "per_problem": per_problem,
        }
    ]


def _paired_title(evals: list[tuple[str, list[dict]]]) -> str:
    title = "held-out accuracy (error bars: 95% CI)"
    files = [(label, results[0]["per_problem"]) for label, results in evals if results[0]["per_problem"]]
    if len(files) < 2:
        return title
    (first, a), (last, b) = files[0], files[-1]
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return title
    diffs = np.array([b[p] - a[p] for p in common])  # [problems] after - before
    mean, (low, high) = float(diffs.mean()), bootstrap_interval(diffs)
    return (
        f"{title}\n{last} - {first}: {100 * mean:+.1f} points, 95% CI {100 * low:+.1f} to {100 * high:+.1f} "
        f"(paired bootstrap over {len(common)} problems)"
    )


def plot_evals(evals: list[tuple[str, list[dict]]], path: str) -> str:
    """Grouped bars: accuracy (%) per benchmark, one bar per labelled evaluation, 95% error bars; returns ``path``."""
    plt = _pyplot()
    benchmarks = list(dict.fromkeys(r["benchmark"] for _, results in evals for r in results))
    width = 0.8 / len(evals)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(benchmarks) * len(evals)), 3.8))
    tops = []
    for i, (label, results) in enumerate(evals):
        found = {r["benchmark"]: r for r in results}
        xs = [j + (i - (len(evals) - 1) / 2) * width for j, b in enumerate(benchmarks) if b in found]
        accs = [100 * found[b]["accuracy"] for b in benchmarks if b in found]
        errs = [100 * Z95 * (found[b]["stderr"] or 0.0) for b in benchmarks if b in found]
        bars = ax.bar(xs, accs, width, yerr=errs, capsize=4, label=label)
        ax.bar_label(bars, labels=[f"{a:.1f}%" for a in accs], label_type="center", fontsize=8, color="white")
        tops += [a + e for a, e in zip(accs, errs)]
    names = {r["benchmark"]: f"{r['benchmark']}\n({r['num_problems']} problems)" for _, rs in evals for r in rs}
    ax.set_xticks(range(len(benchmarks)), [names[b] for b in benchmarks])
    ax.set_xlim(-1, len(benchmarks))  # room beside the bars for one benchmark as for several
    ax.set(ylabel="accuracy (%)", ylim=accuracy_ylim(tops))
    ax.set_title(_paired_title(evals), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _labelled(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--eval takes LABEL=PATH, got {text!r}")
    return label, path


def plot_main(argv: list[str]) -> int:
    """``grpo plot OUTPUT_DIR [--eval LABEL=PATH ...] [--out DIR] [--smoothing W]``; prints the files written.
    Returns 2 with a message naming the file when ``metrics.jsonl`` or an evaluation is missing or unreadable."""
    parser = argparse.ArgumentParser(
        prog="grpo plot", description="PNG training curves from metrics.jsonl; held-out accuracy before/after."
    )
    parser.add_argument("output_dir", help="a grpo train output_dir (with metrics.jsonl)")
    parser.add_argument("--out", default=None, help="where to write the PNG files (default: OUTPUT_DIR/plots)")
    parser.add_argument("--smoothing", type=float, default=0.8, help="EMA weight in [0, 1) (0 = raw values)")
    parser.add_argument(
        "--eval",
        type=_labelled,
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a grpo eval --out JSONL file or --out_dir folder, labelled (repeat, in bar order)",
    )
    ns = parser.parse_args(argv)
    if not 0 <= ns.smoothing < 1:
        parser.error(f"--smoothing must be in [0, 1), got {ns.smoothing}")
    out = ns.out or os.path.join(ns.output_dir, "plots")
    try:
        records, restarts = load_metrics(ns.output_dir)
        evals = [(label, load_eval(path)) for label, path in ns.eval]
    except (FileNotFoundError, ValueError) as err:
        print(f"grpo plot: {err}", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    paths = plot_curves(records, restarts, out, ns.smoothing)
    if evals:
        paths.append(plot_evals(evals, os.path.join(out, EVAL_FILE)))
    print("\n".join(paths))
    return 0
