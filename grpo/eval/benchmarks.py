"""A small registry of evaluation benchmarks: where each one lives (a local file or a hub data set), which
field holds the problem and which the gold answer, and how to render its prompts with the training template.

Every benchmark becomes rows ``{"benchmark", "index", "problem", "solution", "prompt", "prompt_ids", ...}``
like the training rows of :mod:`grpo.data` (``solution`` is the gold answer the ``accuracy`` reward reads).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grpo.config import DataArguments
from grpo.data import load_rows, recipe_prompt
from grpo.io import read_jsonl
from rewards.extract import extract_gold

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data")
"""``../shared/data`` relative to the project root: offline copies of the benchmarks."""
LONG_FIELDS = ("solution", "question", "problem", "prompt", "answer")  # not copied into the rows


def load_local_or_hub(benchmark: Benchmark, data_dir: str | None) -> list[dict[str, Any]]:
    """Raw rows: the local file (``data_dir/local``, or ``local`` itself when absolute) if it exists,
    else the hub data set through ``datasets``. Raises ``FileNotFoundError`` when neither is available."""
    path = benchmark.local if os.path.isabs(benchmark.local) else os.path.join(data_dir or "", benchmark.local)
    if (data_dir or os.path.isabs(benchmark.local)) and os.path.isfile(path):
        if path.endswith(".jsonl"):
            return [row for _, row in read_jsonl(path)]
        return load_rows(DataArguments(dataset_name=path))
    hub_id, config, split = benchmark.hub
    if not hub_id:
        raise FileNotFoundError(f"{benchmark.name}: {path} not found and no hub data set is registered")
    return load_rows(DataArguments(dataset_name=hub_id, dataset_config=config, dataset_split=split))


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    ``local``: path of its file under the data folder; ``hub``: ``(data set id, config, split)`` used when
    the file is absent; ``problem_fields``: the first present field holds the problem; ``gold_field``: the gold
    answer, read with ``answer_format`` (see :func:`rewards.extract.extract_gold`); ``level_field``: the difficulty
    field that ``--levels`` filters on (None: the benchmark has none); ``reward``: the correctness reward;
    ``loader(benchmark, data_dir)`` returns the raw rows (default: :func:`load_local_or_hub`).
    """

    name: str
    local: str
    hub: tuple[str, str | None, str]
    problem_fields: tuple[str, ...]
    gold_field: str
    answer_format: str = "auto"
    level_field: str | None = None
    reward: str = "accuracy"
    source: str = ""
    loader: Callable[[Benchmark, str | None], list[dict[str, Any]]] = load_local_or_hub


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Add ``benchmark`` to :data:`BENCHMARKS`. Raises ``ValueError`` when the name is taken."""
    if benchmark.name in BENCHMARKS:
        raise ValueError(f"a benchmark named {benchmark.name!r} is already registered")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


register_benchmark(
    Benchmark(
        "gsm8k",
        "gsm8k/test.jsonl",
        ("openai/gsm8k", "main", "test"),
        ("question",),
        "answer",
        "gsm8k",
        source="Cobbe et al. 2021, GSM8K test split (1319 problems)",
    )
)
register_benchmark(
    Benchmark(
        "math500",
        "math500/test.jsonl",
        ("HuggingFaceH4/MATH-500", None, "test"),
        ("problem",),
        "answer",
        "math",
        level_field="level",
        source="Lightman et al. 2023, MATH-500 subset of the MATH test set (Hendrycks et al. 2021)",
    )
)
register_benchmark(
    Benchmark(
        "aime24",
        "aime24/test.jsonl",
        ("HuggingFaceH4/aime_2024", None, "train"),
        ("problem", "question"),
        "answer",
        "raw",
        source="AIME 2024 I and II (30 problems)",
    )
)
register_benchmark(
    Benchmark(
        "amc23",
        "amc23/test.jsonl",
        ("math-ai/amc23", None, "test"),
        ("problem", "question"),
        "answer",
        "raw",
        source="AMC 2023 (40 problems)",
    )
)


def resolve_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``, or an ad-hoc one for a path to a ``.jsonl``/``.json``/``.parquet``
    file (problem: question/problem/prompt field; gold: answer/solution, read with ``auto``).
    Raises ``ValueError`` for anything else, listing the registered names."""
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name.endswith((".jsonl", ".json", ".parquet")):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"benchmark file not found: {name}")
        stem = os.path.splitext(os.path.basename(name))[0]
        return Benchmark(
            stem, os.path.abspath(name), ("", None, ""), ("question", "problem", "prompt"), "answer", source=name
        )
    raise ValueError(f"unknown benchmark {name!r}; registered: {sorted(BENCHMARKS)} (or give a .jsonl file)")


def default_data_dir() -> str | None:
    """``../shared/data`` relative to the project root when it exists, else None (hub data sets)."""
    return DEFAULT_DATA_DIR if os.path.isdir(DEFAULT_DATA_DIR) else None


def _select(
    benchmark: Benchmark, raw: list[dict], limit: int | None, levels: list[int] | None
) -> list[tuple[int, dict]]:
    """``(index in the file, row)`` after the level filter, then the first ``limit`` rows."""
    pairs = list(enumerate(raw))
    if levels and benchmark.level_field:
        wanted = {str(v) for v in levels}
        pairs = [(i, r) for i, r in pairs if str(r.get(benchmark.level_field)).removeprefix("Level ") in wanted]
    return pairs[:limit] if limit is not None else pairs


def benchmark_rows(
    name: str,
    tokenizer,
    data_args: DataArguments,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    levels: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Rendered, tokenised rows of one benchmark with the training prompt template of ``data_args``
    (``prompt_template``, ``system_prompt``, ``instruction``, ``think_prefill``). No prompt is dropped for
    length. ``levels`` filters benchmarks with a ``level_field`` and is ignored by the others.

    Raises ``ValueError`` naming the benchmark and row for a missing field or an unreadable gold answer.
    """
    benchmark = resolve_benchmark(name)
    raw = benchmark.loader(benchmark, data_dir)
    rows = []
    for index, row in _select(benchmark, raw, limit, levels):
        field = next((f for f in benchmark.problem_fields if f in row), None)
        gold_field = benchmark.gold_field if benchmark.gold_field in row else "solution"
        if field is None or gold_field not in row:
            raise ValueError(
                f"{benchmark.name}, row {index}: needs one of {list(benchmark.problem_fields)} and "
                f"{benchmark.gold_field!r}; fields are {sorted(row)}"
            )
        try:
            gold = extract_gold(row[gold_field], benchmark.answer_format) or ""
        except ValueError as err:
            raise ValueError(f"{benchmark.name}, row {index}: cannot read the gold answer: {err}") from err
        problem = str(row[field])
        prompt = recipe_prompt(problem, tokenizer, data_args)
        extra = {k: v for k, v in row.items() if k not in LONG_FIELDS and isinstance(v, (str, int, float, bool))}
        rows.append(
            {
                **extra,
                "benchmark": benchmark.name,
                "index": index,
                "problem": problem,
                "solution": gold,
                "prompt": prompt,
                "prompt_ids": tokenizer(prompt, add_special_tokens=False)["input_ids"],
            }
        )
    if not rows:
        raise ValueError(f"{benchmark.name}: no problems left (limit={limit}, levels={levels})")
    return rows


def recipe_rows(
    tokenizer, data_args: DataArguments, *, heldout_from: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The benchmark ``recipe``: the recipe's own data set (``data_args``: a reasoning-gym task, a file, a hub
    set), rendered with its template. With ``heldout_from`` (a training run's ``output_dir``) only the problems
    that run never drew, repeats removed (:func:`grpo.data.trained_problems`, :func:`grpo.data.heldout_rows`):
    problems of the training distribution that the policy never saw. ``index`` is the row's position in the data
    set, so a resumed or longer evaluation keeps its problems. Raises ``FileNotFoundError`` when ``heldout_from``
    has no checkpoint."""
    from grpo.data import build_prompt_dataset, heldout_rows, trained_problems

    rows = [{**row, "index": i} for i, row in enumerate(build_prompt_dataset(data_args, tokenizer).rows)]
    if heldout_from:
        rows = heldout_rows(rows, trained_problems(heldout_from))
    short = ("problem", "solution", "prompt", "prompt_ids", "index")
    return [
        {k: v for k, v in row.items() if k in short or isinstance(v, (str, int, float, bool))} | {"benchmark": "recipe"}
        for row in rows[:limit]
    ]


def _built_by_load_benchmarks(benchmark: Benchmark, data_dir: str | None) -> list[dict[str, Any]]:
    raise ValueError("the recipe benchmark needs the recipe: load it with load_benchmarks(['recipe'], ...)")


RECIPE = register_benchmark(
    Benchmark(
        "recipe",
        "",
        ("", None, ""),
        (),
        "",
        source="the recipe's own data set; with --heldout_from RUN only the problems that run never drew",
        loader=_built_by_load_benchmarks,
    )
)


def load_benchmarks(
    names: list[str],
    tokenizer,
    data_args: DataArguments,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    levels: list[int] | None = None,
    heldout_from: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{benchmark name: rows}`` for :func:`benchmark_rows` of each name (e.g. a held-out slice for
    evaluation during training: ``limit=eval_limit``); ``recipe`` gives :func:`recipe_rows` (``heldout_from``
    applies to it only). ``data_dir=None`` uses :func:`default_data_dir`."""
    data_dir = data_dir or default_data_dir()
    out = {}
    for name in names:
        if name == RECIPE.name:
            out[name] = recipe_rows(tokenizer, data_args, heldout_from=heldout_from, limit=limit)
            continue
        rows = benchmark_rows(name, tokenizer, data_args, data_dir=data_dir, limit=limit, levels=levels)
        out[rows[0]["benchmark"]] = rows
    return out
