"""``grpo score``: score a JSONL file of completions with chosen rewards and print statistics.

Useful to check a dataset's gold answers, or a model's outputs, before a long run::

    grpo score outputs.jsonl --rewards accuracy,format --reward_kwargs '{"format": {"strict": false}}'

Each line is a JSON object with a ``completion`` string and any other columns (``solution``,
``completion_ids``, ``reasoning_gym_entry`` ...), passed to the rewards like the trainer does;
a ``prompt`` column is passed as ``prompts``. Rows are scored in file order, in one batch, so
group-wise rewards (``length``) see consecutive groups.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from grpo.io import read_jsonl
from rewards import REWARDS, get_reward_funcs
from rewards._common import as_text

COLUMN_ALIASES = {"prompt": "prompts"}


class ScoreInputError(ValueError):
    """A bad input file or row; the message names the file and line."""


def read_rows(path: str) -> tuple[list[str], dict[str, list[Any]]]:
    """Read a JSONL file into completions and aligned columns.

    Blank lines are skipped. A column missing from some rows is ``None`` there.

    Returns:
        ``(completions, columns)``; the ``prompt`` column is renamed ``prompts``.

    Raises:
        ScoreInputError: unreadable file, invalid JSON, a row that is not an object, or a row
            without a string ``completion`` (message: ``FILE:LINE: ...``).
    """
    rows: list[dict[str, Any]] = []
    try:
        for lineno, row in read_jsonl(path):
            if "completion" not in row:
                raise ScoreInputError(f"{path}:{lineno}: row has no 'completion' (keys: {sorted(row)})")
            try:
                row["completion"] = as_text(row["completion"])
            except TypeError as e:
                raise ScoreInputError(f"{path}:{lineno}: 'completion' is not text: {e}") from None
            rows.append(row)
    except ValueError as e:
        raise ScoreInputError(str(e)) from None
    except OSError as e:
        raise ScoreInputError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ScoreInputError(f"{path}: not UTF-8 text ({e})") from None
    if not rows:
        raise ScoreInputError(f"{path}: no rows")
    keys = sorted({k for row in rows for k in row} - {"completion"})
    columns = {COLUMN_ALIASES.get(k, k): [row.get(k) for row in rows] for k in keys}
    return [row["completion"] for row in rows], columns


def summarize(values: list[float | None]) -> dict[str, float | int | None]:
    """Statistics of one reward's values: mean, std (population), min, max over the non-None
    values (``None`` when all are None), ``none`` (share of None, in [0, 1]) and ``count``
    (number of values)."""
    real = [float(v) for v in values if v is not None]
    out: dict[str, float | int | None] = {"mean": None, "std": None, "min": None, "max": None}
    if real:
        mean = sum(real) / len(real)
        out = {
            "mean": mean,
            "std": math.sqrt(sum((v - mean) ** 2 for v in real) / len(real)),
            "min": min(real),
            "max": max(real),
        }
    out["none"] = (len(values) - len(real)) / len(values) if values else 0.0
    out["count"] = len(values)
    return out


def format_table(stats: dict[str, dict]) -> str:
    """A fixed-width text table, one line per reward."""
    width = max([len("reward")] + [len(n) for n in stats])
    lines = [f"{'reward':<{width}}  {'mean':>8}  {'std':>8}  {'min':>8}  {'max':>8}  {'none':>6}  {'count':>6}"]
    for name, s in stats.items():
        cells = ["-" if s[k] is None else f"{s[k]:.4f}" for k in ("mean", "std", "min", "max")]
        lines.append(
            f"{name:<{width}}  {cells[0]:>8}  {cells[1]:>8}  {cells[2]:>8}  {cells[3]:>8}"
            f"  {s['none']:>6.1%}  {s['count']:>6d}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grpo score",
        description="Score a JSONL file of completions with chosen rewards and print per-reward statistics "
        "(mean, std, min, max, share of None, count).",
    )
    p.add_argument("file", help="JSONL file; each row has 'completion' and other columns (e.g. 'solution')")
    p.add_argument(
        "--rewards",
        required=True,
        help=f"comma-separated reward names ({', '.join(sorted(REWARDS))}) or module.path:function entries",
    )
    p.add_argument(
        "--reward_kwargs",
        default=None,
        help='JSON object of settings per reward, e.g. \'{"cosine": {"max_len": 512}}\'',
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``grpo score FILE --rewards a,b [--reward_kwargs JSON]``.

    Prints the per-reward table to stdout; errors go to stderr.

    Returns:
        0 on success, 2 on bad arguments, a bad file/row or a reward error.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error (already printed)
        return int(e.code or 0)
    try:
        names = [n.strip() for n in args.rewards.split(",") if n.strip()]
        kwargs = json.loads(args.reward_kwargs) if args.reward_kwargs else None
        if kwargs is not None and not (isinstance(kwargs, dict) and all(isinstance(v, dict) for v in kwargs.values())):
            raise ValueError('--reward_kwargs must be a JSON object of objects, e.g. {"cosine": {"max_len": 512}}')
        funcs = get_reward_funcs(names, kwargs)
        completions, columns = read_rows(args.file)
        stats = {}
        for func in funcs:
            try:
                stats[func.__name__] = summarize(func(completions, **columns))
            except (ValueError, TypeError) as e:
                raise ValueError(f"reward '{func.__name__}' failed on {args.file}: {e}") from e
    except json.JSONDecodeError as e:
        print(f"error: --reward_kwargs is not valid JSON: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # includes ScoreInputError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: {len(completions)} rows")
    print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
