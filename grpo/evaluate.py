"""Held-out accuracy of a model on a prompt data set: ``grpo eval``.

Greedy decoding (or sampling with ``--temperature``) through the same sampler and prompt template
as training, scored with the same reward functions; writes one JSON line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from grpo.config import parse_config
from grpo.data import build_prompt_dataset
from grpo.model import load_policy, load_tokenizer
from grpo.samplers import SamplingConfig, build_sampler
from grpo.scoring import build_reward_funcs, reward_name, score_completions


@torch.no_grad()
def evaluate(model, tokenizer, rows: list[dict], reward_funcs: list, *, max_completion_length: int,
             temperature: float = 0.0, batch_size: int = 32, sampler: str = "hf") -> tuple[dict[str, float], list[dict]]:
    """Generate one completion per row and score it with every reward.

    Returns ``(summary, records)``: the mean of each reward (``<name>``, NaN-free mean over verifiable
    rows), ``completion_length`` (mean tokens), ``truncated_frac``, ``num_problems``, ``seconds``;
    and one record per row with the completion and its rewards.
    """
    engine = build_sampler(sampler, model, tokenizer, SamplingConfig(max_completion_length, temperature))
    names = [reward_name(f) for f in reward_funcs]
    records, start = [], time.perf_counter()
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        rollout = engine.generate([r["prompt_ids"] for r in chunk], 1)
        columns = {k: [r[k] for r in chunk] for k in chunk[0] if k not in ("prompt_ids", "prompt")}
        columns["prompts"] = [r["prompt"] for r in chunk]
        columns["completion_ids"] = [ids[m.bool()].tolist() for ids, m in zip(rollout.completion_ids, rollout.completion_mask)]
        columns["truncated"] = rollout.truncated.tolist()
        table = score_completions(reward_funcs, rollout.completions, columns)  # [n, F]
        for j, row in enumerate(chunk):
            records.append({"problem": row["problem"], "solution": row["solution"], "completion": rollout.completions[j],
                            "length": int(rollout.completion_mask[j].sum()), "truncated": bool(rollout.truncated[j]),
                            **{n: (None if table[j, k].isnan() else float(table[j, k])) for k, n in enumerate(names)}})
    summary = {n: _mean([r[n] for r in records if r[n] is not None]) for n in names}
    summary.update({"completion_length": _mean([r["length"] for r in records]),
                    "truncated_frac": _mean([float(r["truncated"]) for r in records]),
                    "num_problems": len(records), "seconds": time.perf_counter() - start})
    return summary, records


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def eval_main(argv: list[str]) -> int:
    """``grpo eval RECIPE.yaml --model PATH [--out FILE] [recipe overrides]``: data, template, rewards and
    completion length come from the recipe (so training and evaluation agree); ``--model`` is any model
    name or folder, e.g. an exported checkpoint."""
    parser = argparse.ArgumentParser(prog="grpo eval", add_help=False)
    parser.add_argument("--model", default=None, help="model to evaluate (default: the recipe's model)")
    parser.add_argument("--out", default=None, help="JSONL of per-problem results")
    parser.add_argument("--eval_temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--batch_size", type=int, default=32)
    ns, rest = parser.parse_known_args(argv)
    model_args, data_args, args = parse_config(rest)
    if ns.model:
        model_args.model_name_or_path, model_args.use_peft = ns.model, False
    tokenizer = load_tokenizer(model_args)
    model = load_policy(model_args).to("cuda" if torch.cuda.is_available() else "cpu")
    rows = build_prompt_dataset(data_args, tokenizer).rows
    funcs = build_reward_funcs(data_args, args)
    summary, records = evaluate(model, tokenizer, rows, funcs, max_completion_length=args.max_completion_length,
                                temperature=ns.eval_temperature, batch_size=ns.batch_size)
    summary["model"] = model_args.model_name_or_path
    if ns.out:
        os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
        with open(ns.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    print(json.dumps(summary))
    return 0
