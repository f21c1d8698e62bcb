"""Time to score a batch with the ``accuracy`` reward when half of it is hostile (issue 15).

The batch: ``--n`` completions, every other one hostile (power towers, 10,000 nested braces, a 1 MB
string, an unpaired surrogate, thousands of unclosed ``$``/``\\(``/``<think>`` ...; gold ``3``) and the
others ordinary (numbers with thousands commas, fractions, intervals, radicals, text; half right and
half wrong, each with its own gold, so the verdict cache does not answer them). Each repeat clears the
verdict cache and scores the whole batch in one call, from the main thread or from a worker thread;
helper processes are started (warm-up call) before timing, as in training after the first step.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rewards.py --n 1000 --repeats 5

The last line printed is one JSON object: per thread kind the median and each run's seconds, the number
of timeouts, and whether every ordinary completion was scored right.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

HOSTILE_GOLD = "3"


def hostile_completions() -> list[str]:
    """Completions built to stall or crash a verifier, all wrong for gold ``3``."""
    return [
        "\\boxed{9^9^9^9^9^9}",
        "The answer is 9^9^9^9^9^9",
        "\\boxed{10^{10^{10^{10}}}}",
        "<answer>2^{2^{2^{2^{2^{2^{2}}}}}}</answer>",
        "\\boxed{" + "{" * 10_000 + "3" + "}" * 10_000 + "}",
        "\\boxed{" + "(" * 5_000 + "3" + ")" * 5_000 + "}",
        "\\boxed{" + "1+" * 500_000 + "3}",  # 1 MB
        "x" * 1_000_000,
        "\\boxed{\ud800 7}",
        "<answer>7\udfff</answer>",
        "$" * 100_000,
        "\\(" * 100_000 + "7",
        "<think>" * 100_000,
        "\\boxed{99999999999!}",
        "\\boxed{(10^{100})!}",
        "\\boxed{9^{999999999}}",
        "\\boxed{\\frac{" * 3_000 + "3" + "}{1}" * 3_000 + "}",
    ]


def ordinary_case(k: int) -> tuple[str, str, float]:
    """``(completion, gold, expected verdict)`` number ``k``: one of five kinds, right when k is even."""
    right = k % 2 == 0
    kind = k % 5
    if kind == 0:
        gold, answer = f"#### {1000 + k:,}", f"{1000 + k if right else 1001 + k:,}"
        return f"<think>\nadding up\n</think>\nThe total is {answer} apples.", gold, float(right)
    if kind == 1:
        num = f"\\frac{{{2 * k + 2}}}{{{2 * k + 4}}}" if right else f"\\frac{{{k + 2}}}{{{k + 1}}}"
        return f"So the ratio is $\\boxed{{{num}}}$.", f"\\frac{{{k + 1}}}{{{k + 2}}}", float(right)
    if kind == 2:
        interval = f"({k}, {k + 2}]" if right else f"[{k}, {k + 2}]"
        return f"<answer>{interval}</answer>", f"({k},{k + 2}]", float(right)
    if kind == 3:
        root = f"\\sqrt{{{2 * k * k}}}" if right else f"{k}\\sqrt{{3}}"
        return f"Hence $x = \\boxed{{{root}}}$", f"{k}\\sqrt{{2}}", float(right)
    gold = ("Even", "Odd")[k % 4 // 2]
    answer = gold.lower() if right else {"Even": "Odd", "Odd": "Even"}[gold]
    return f"\\boxed{{\\text{{{answer}}}}}", f"$\\text{{{gold}}}$", float(right)


def batch(n: int, offset: int = 0) -> tuple[list[str], list[str], list[float | None]]:
    """``n`` completions, golds and expected verdicts (``None``: hostile, all wrong); ``offset`` shifts the
    ordinary cases, so that batches with different offsets share no ordinary answer or gold."""
    hostile = hostile_completions()
    completions, golds, expected = [], [], []
    for i in range(n):
        if i % 2:
            completions.append(hostile[(i // 2) % len(hostile)])
            golds.append(HOSTILE_GOLD)
            expected.append(None)
        else:
            completion, gold, verdict = ordinary_case(offset + i // 2)
            completions.append(completion)
            golds.append(gold)
            expected.append(verdict)
    return completions, golds, expected


def score_once(completions: list[str], golds: list[str], in_thread: bool) -> tuple[float, list, int]:
    """One timed call of the accuracy reward (cache cleared first): ``(seconds, rewards, timeouts)``."""
    from rewards import accuracy_reward, count_timeouts
    from rewards.accuracy import clear_cache

    clear_cache()
    result: dict = {}

    def run() -> None:
        with count_timeouts() as count:
            start = time.monotonic()
            result["rewards"] = accuracy_reward(completions, solution=golds)
            result["seconds"] = time.monotonic() - start
        result["timeouts"] = count.timeouts

    if in_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    else:
        run()
    return result["seconds"], result["rewards"], result["timeouts"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="completions per batch (half hostile)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per thread kind")
    args = p.parse_args(argv)
    from rewards import accuracy_reward

    accuracy_reward(["\\boxed{\\frac{1}{2}}"] * 64, solution=[f"\\frac{{{i}}}{{{2 * i}}}" for i in range(1, 65)])
    report: dict = {"n": args.n, "hostile": args.n // 2}
    for pass_index, kind in enumerate(("main", "thread")):
        runs, right = [], True
        for r in range(args.repeats):  # fresh ordinary cases each run: no helper-side parse cache hits
            completions, golds, expected = batch(args.n, offset=(pass_index * args.repeats + r) * args.n)
            runs.append(score_once(completions, golds, kind == "thread"))
            right = right and all(v == (0.0 if e is None else e) for v, e in zip(runs[-1][1], expected))
        report[kind] = {
            "median_s": round(statistics.median(s for s, _, _ in runs), 3),
            "runs_s": [round(s, 3) for s, _, _ in runs],
            "timeouts": [t for _, _, t in runs],
            "all_right": right,
        }
        print(f"{kind}: median {report[kind]['median_s']} s over {args.repeats} runs; all right: {right}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
