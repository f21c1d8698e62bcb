"""Print one Markdown table comparing training runs step window by step window, from their metrics.jsonl.

For side-by-side runs at equal steps (e.g. with and without the curriculum): the mean of each metric over the
steps in [--from_step, --to_step], and the completion tokens sampled in that window
(``completion_length/mean`` x completions per step, summed).

python scripts/compare_runs.py outputs/cur outputs/nocur --labels "curriculum,no curriculum" --from_step 31
"""

import argparse
import os

from grpo.io import read_jsonl

METRICS = ("zero_std_frac", "reward", "completion_length/mean", "truncated_frac", "entropy", "step_time_s")


def window(path: str, first: int, last: int) -> list[dict]:
    """The rows of ``path``/metrics.jsonl whose step is in [first, last]. Raises ``FileNotFoundError``, and
    ``ValueError`` naming the line of a row that is not a JSON object (:func:`grpo.io.read_jsonl`)."""
    rows = [row for _, row in read_jsonl(os.path.join(path, "metrics.jsonl"))]
    return [r for r in rows if first <= r["step"] <= last]


def summary(rows: list[dict], completions_per_step: int) -> dict:
    """Mean of each metric over ``rows`` (steps without it left out) and the completion tokens sampled."""
    out = {"steps": len(rows), "first": rows[0]["step"] if rows else None, "last": rows[-1]["step"] if rows else None}
    for name in METRICS:
        values = [r[name] for r in rows if r.get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
    out["sampled_tokens"] = sum(r["completion_length/mean"] * completions_per_step for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training output folders (each with metrics.jsonl)")
    parser.add_argument("--labels", default=None, help="comma-separated row labels (default: the folder names)")
    parser.add_argument("--from_step", type=int, default=1)
    parser.add_argument("--to_step", type=int, default=10**9)
    parser.add_argument("--completions_per_step", type=int, default=64, help="prompts x G per step, all processes")
    ns = parser.parse_args()
    labels = ns.labels.split(",") if ns.labels else [os.path.basename(r.rstrip("/")) for r in ns.runs]
    print("| run | steps | " + " | ".join(METRICS) + " | sampled completion tokens |")
    print("| --- | --- |" + " ---: |" * (len(METRICS) + 1))
    for label, run in zip(labels, ns.runs):
        s = summary(window(run, ns.from_step, ns.to_step), ns.completions_per_step)
        cells = ["-" if s[m] is None else f"{s[m]:.3f}" for m in METRICS]
        print(f"| {label} | {s['first']}-{s['last']} | " + " | ".join(cells) + f" | {s['sampled_tokens']:.0f} |")


if __name__ == "__main__":
    main()
