"""Held-out accuracy of a model: ``grpo eval``, and evaluation during training.

Two modes of ``grpo eval``:

* ``grpo eval RECIPE.yaml --model PATH [--out FILE]``: the recipe's data set is the benchmark. Greedy
  decoding (or sampling with ``--eval_temperature``) through the same sampler and prompt template as
  training, scored with the recipe's reward functions; one JSON line per problem.
* ``grpo eval [RECIPE.yaml] --model PATH --benchmarks gsm8k,math500 --num_samples K ...``: registered
  benchmarks with test-time compute (pass@k, maj@k, best-of-N, thinking budgets); see :mod:`grpo.eval.cli`.

:func:`evaluate_during_training` scores the policy on small held-out slices every few training steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from grpo.config import parse_config
from grpo.data import build_prompt_dataset, heldout_rows, trained_problems
from grpo.eval.metrics import mean_or_none
from grpo.model import load_policy, load_tokenizer
from grpo.samplers import Sampler, SamplingConfig, build_sampler
from grpo.scoring import build_reward_funcs, reward_name, rollout_reward_columns, score_completions


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    rows: list[dict],
    reward_funcs: list,
    *,
    max_completion_length: int,
    temperature: float = 0.0,
    batch_size: int = 32,
    sampler: str = "hf",
) -> tuple[dict[str, float], list[dict]]:
    """Generate one completion per row and score it with every reward.

    Returns ``(summary, records)``: the mean of each reward (``<name>``, mean over verifiable rows, None
    when there is none), ``completion_length`` (mean tokens), ``truncated_frac``, ``num_problems``, ``seconds``;
    and one record per row with the completion and its rewards.
    """
    engine = build_sampler(sampler, model, tokenizer, SamplingConfig(max_completion_length, temperature))
    names = [reward_name(f) for f in reward_funcs]
    records, start = [], time.perf_counter()
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        rollout = engine.generate([r["prompt_ids"] for r in chunk], 1)
        columns = rollout_reward_columns(chunk, rollout, 1)
        table = score_completions(reward_funcs, rollout.completions, columns)  # [n, F]
        for j, row in enumerate(chunk):
            records.append(
                {
                    "problem": row["problem"],
                    "solution": row["solution"],
                    "completion": rollout.completions[j],
                    "length": int(rollout.completion_mask[j].sum()),
                    "truncated": bool(rollout.truncated[j]),
                    **{n: (None if table[j, k].isnan() else float(table[j, k])) for k, n in enumerate(names)},
                }
            )
    summary = {n: mean_or_none([r[n] for r in records if r[n] is not None]) for n in names}
    summary.update(
        {
            "completion_length": mean_or_none([r["length"] for r in records]),
            "truncated_frac": mean_or_none([float(r["truncated"]) for r in records]),
            "num_problems": len(records),
            "seconds": time.perf_counter() - start,
        }
    )
    return summary, records


def _benchmark_mode(argv: list[str]) -> bool:
    """``--benchmarks`` given (or a bare ``--help``, which documents the benchmark mode)."""
    return any(a == "--benchmarks" or a.startswith("--benchmarks=") for a in argv) or argv in (["-h"], ["--help"])


def eval_main(argv: list[str]) -> int:
    """``grpo eval RECIPE.yaml --model PATH [--out FILE] [recipe overrides]``: data, template, rewards and
    completion length come from the recipe (so training and evaluation agree); ``--model`` is any model
    name or folder, e.g. an exported checkpoint. With ``--benchmarks``: benchmark mode
    (:func:`grpo.eval.cli.benchmark_main`)."""
    if _benchmark_mode(argv):
        from grpo.eval.cli import benchmark_main

        return benchmark_main(argv)
    parser = argparse.ArgumentParser(prog="grpo eval", add_help=False)
    parser.add_argument("--model", default=None, help="model to evaluate (default: the recipe's model)")
    parser.add_argument("--out", default=None, help="JSONL of per-problem results")
    parser.add_argument("--eval_temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--heldout_from",
        default=None,
        help="a training run's output_dir: leave out every problem that run trained on, and repeats",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many problems")
    ns, rest = parser.parse_known_args(argv)
    model_args, data_args, args, _ = parse_config(rest)
    if ns.model:
        model_args.model_name_or_path, model_args.use_peft = ns.model, False
    tokenizer = load_tokenizer(model_args)
    model = load_policy(model_args).to("cuda" if torch.cuda.is_available() else "cpu")
    rows = build_prompt_dataset(data_args, tokenizer).rows
    if ns.heldout_from:
        rows = heldout_rows(rows, trained_problems(ns.heldout_from), ns.limit)
    rows = rows[: ns.limit]
    funcs = build_reward_funcs(data_args, args)
    summary, records = evaluate(
        model,
        tokenizer,
        rows,
        funcs,
        max_completion_length=args.max_completion_length,
        temperature=ns.eval_temperature,
        batch_size=ns.batch_size,
    )
    summary["model"] = model_args.model_name_or_path
    if ns.out:
        os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
        with open(ns.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    print(json.dumps(summary))
    return 0


@torch.no_grad()
def evaluate_during_training(
    model,
    tokenizer,
    rows_by_benchmark: dict[str, list[dict]],
    reward_funcs: list,
    *,
    num_samples: int,
    max_completion_length: int,
    temperature: float = 0.6,
    top_p: float = 0.95,
    batch_size: int = 64,
    sampler: Sampler | None = None,
    seed: int = 0,
    timeout_seconds: float = 5.0,
) -> dict[str, float]:
    """Accuracy of the current policy on small held-out slices, for logging every few training steps.

    Args:
        model: the (unwrapped) policy; tokenizer: its tokenizer.
        rows_by_benchmark: ``{name: rows}`` from :func:`grpo.eval.benchmarks.load_benchmarks` (built once).
        reward_funcs: rewards of which the first ``accuracy`` or ``reasoning_gym`` gives the verdicts.
        num_samples: K completions per problem; max_completion_length: tokens per completion.
        sampler: the trainer's sampler (a vLLM engine is reused through ``with_config``); None: transformers.
        seed: the sampling seed. The global RNG state is saved and restored, so training's own sampling
            (and bit-exact resume) is not affected.
    Returns:
        Per benchmark: ``eval/<name>/pass@1`` (mean verdict over the K samples: R1's pass@1),
        ``eval/<name>/pass@K`` and ``eval/<name>/maj@K`` (with K = num_samples, e.g. ``maj@4``),
        ``eval/<name>/completion_length`` (mean tokens) and ``eval/<name>/truncated_frac``; means over the
        verifiable problems (NaN when there is none).
    Raises:
        ValueError: when no correctness reward is among ``reward_funcs``.
    """
    from grpo.eval.report import summarize_group
    from grpo.eval.runner import EvalSettings, sample_rows, score_batch
    from grpo.train_metrics import CORRECTNESS_REWARDS

    names = [reward_name(f) for f in reward_funcs]
    judge = next((f for n, f in zip(names, reward_funcs) if n in CORRECTNESS_REWARDS), None)
    if judge is None:
        raise ValueError(f"evaluation needs a correctness reward ({', '.join(CORRECTNESS_REWARDS)}); got {names}")
    settings = EvalSettings(
        num_samples=num_samples,
        max_completion_length=max_completion_length,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        timeout_seconds=timeout_seconds,
    )
    engine = (
        sampler.with_config(settings.sampling_config())
        if sampler is not None
        else build_sampler("hf", model, tokenizer, settings.sampling_config())
    )
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    per_call, k, metrics = max(1, batch_size // num_samples), num_samples, {}
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name, rows in rows_by_benchmark.items():
            records = []
            for i in range(0, len(rows), per_call):
                batch = rows[i : i + per_call]
                records += score_batch(
                    batch, sample_rows(engine, tokenizer, batch, settings, None), judge, {}, None, timeout_seconds
                )
            result = summarize_group(records)
            for key, source in (
                ("pass@1", "pass@1"),
                (f"pass@{k}", f"pass@{k}"),
                (f"maj@{k}", f"maj@{k}"),
                ("completion_length", "completion_length/mean"),
                ("truncated_frac", "truncated_frac"),
            ):
                value = result.get(source)
                metrics[f"eval/{name}/{key}"] = float("nan") if value is None else float(value)
    return metrics


class HeldoutEvaluator:
    """Evaluation during training (``eval_steps``, ``eval_benchmarks``, ``eval_limit``, ``eval_num_samples`` of
    ``GRPOArguments``): :func:`evaluate_during_training` on held-out benchmark slices, loaded at the first use."""

    def __init__(self, args, data_args, tokenizer, reward_funcs: list):
        self.args, self.data_args, self.tokenizer, self.reward_funcs = args, data_args, tokenizer, reward_funcs
        self.rows: dict[str, list[dict]] | None = None  # benchmark -> rows, loaded at the first evaluation

    def due(self, step: int) -> bool:
        """True when ``eval_steps`` (> 0) divides the optimizer step ``step``."""
        return bool(self.args.eval_steps) and step % self.args.eval_steps == 0

    def __call__(self, model, sampler: Sampler | None) -> dict[str, float]:
        """``eval/<benchmark>/...`` metrics of ``model`` sampled with ``sampler`` (see :func:`evaluate_during_training`)."""
        from grpo.eval.benchmarks import load_benchmarks

        args = self.args
        if self.rows is None:
            self.rows = load_benchmarks(args.eval_benchmarks, self.tokenizer, self.data_args, limit=args.eval_limit)
        return evaluate_during_training(
            model,
            self.tokenizer,
            self.rows,
            self.reward_funcs,
            num_samples=args.eval_num_samples,
            max_completion_length=args.max_completion_length,
            sampler=sampler,
            seed=args.seed,
        )
