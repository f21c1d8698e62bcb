"""``grpo sample``: rejection sampling into SFT data (DeepSeek-R1 §2.3.3), and distillation traces (§2.4).

K completions per prompt are sampled from a model (the recipe's ``sampler``: ``hf`` or ``vllm``) with the
recipe's prompt template and sampling settings. A completion is kept only when it is

* correct: the ``accuracy`` reward is 1 (math-verify against the gold answer);
* well formatted: the ``format`` reward is 1 (``<think>`` ... ``</think>`` then ``<answer>`` ... ``</answer>``);
* finished: it ended with EOS, not at ``max_completion_length``;
* language-consistent: the share of target-language words of its chain of thought (``rewards.language``) is at
  least ``min_language_consistency`` (R1 filtered out mixed-language chains of thought);
* not repetitive: the share of repeated word n-grams, ``1 - unique/total`` (``rewards.repetition``), is at most
  ``max_repetition``;
* new: not a duplicate (whitespace- and case-normalised) of a completion already kept for the same prompt;

and at most ``max_per_prompt`` completions are kept per prompt (in sampling order). The output folder
(``output_dir``) receives ``data.jsonl`` (``{problem, prompt, completion, solution, source, length}``, read by
``grpo sft``; the completion always starts with ``<think>``, also when the prompt pre-filled it) and
``stats.json``: per source (the row's ``source`` column, else the data set's name) the prompts, completions,
accepted completions, acceptance rate, prompts with at least one kept completion, rejections by reason (the
first failed check, or duplicate / over_limit) and failures per check (a completion counts for each it fails).
Distillation is the same command with a teacher model: ``grpo sft`` re-renders each problem with the
student's prompt template.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from grpo.config import CONFIG_CLASSES, DataArguments, GRPOArguments, ModelArguments, VLLMArguments, parse_config
from grpo.config import help_field as _help

REASONS = ("incorrect", "format", "truncated", "language", "repetition", "duplicate", "over_limit")


@dataclass
class SampleArguments:
    """How many completions to sample and which of them ``grpo sample`` keeps."""

    num_samples: int = _help("K: completions sampled per prompt.", default=4)
    max_per_prompt: int = _help("M: at most this many kept completions per prompt.", default=2)
    num_prompts: int | None = _help("Sample the first N prompts of the data set (None = all).", default=None)
    prompt_offset: int = _help("Skip this many prompts first (e.g. the ones an RL stage trained on).", default=0)
    sample_batch_size: int = _help("Prompts per generate call.", default=8)
    format_strict: bool = _help(
        "Exact newlines around the tags (the strict `format` reward) instead of any whitespace.", default=True
    )
    target_language: str = _help("Language the chains of thought must be in (rewards.language codes).", default="en")
    min_language_consistency: float = _help(
        "Least share of target-language words in the chain of thought.", default=0.95
    )
    repetition_ngram_size: int = _help("n of the word n-grams counted for repetition.", default=4)
    max_repetition: float = _help(
        "Most share of repeated n-grams (1 - unique/total) a kept completion may have.", default=0.2
    )

    def __post_init__(self) -> None:
        for name in ("num_samples", "max_per_prompt", "sample_batch_size", "repetition_ngram_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_language_consistency <= 1 or not 0 <= self.max_repetition <= 1:
            raise ValueError("min_language_consistency and max_repetition must be in [0, 1]")


SAMPLE_CLASSES = (*CONFIG_CLASSES, SampleArguments)  # the argument classes of a `grpo sample` recipe


def normalise(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: two completions are duplicates when these are equal."""
    return re.sub(r"\s+", " ", text).strip().lower()


CHECKS = ("incorrect", "format", "truncated", "language", "repetition")


def failed_checks(
    completions: list[str],
    solutions: list[str],
    truncated: list[bool],
    args: SampleArguments,
    think_prefilled: bool = False,
) -> list[list[str]]:
    """Every check each completion fails, in the order of ``CHECKS`` (``incorrect``: accuracy reward != 1,
    ``format``: format reward != 1, ``truncated``: no EOS, ``language``: language consistency below
    ``min_language_consistency``, ``repetition``: repeated n-gram share above ``max_repetition``); [] = passes.
    ``completions`` are as sampled (without ``<think>\n`` when ``think_prefilled``)."""
    from rewards import accuracy_reward, format_reward, language_consistency_reward
    from rewards.repetition import repetition_penalty

    correct = accuracy_reward(completions, solution=solutions)
    formatted = format_reward(completions, strict=args.format_strict, think_prefilled=think_prefilled)
    prefix = "<think>\n" if think_prefilled else ""
    language = language_consistency_reward([prefix + c for c in completions], target_language=args.target_language)
    failed = []
    for i, text in enumerate(completions):
        repeated = -repetition_penalty(text, args.repetition_ngram_size, -1.0)
        passes = (
            correct[i] == 1.0,
            formatted[i] == 1.0,
            not truncated[i],
            language[i] >= args.min_language_consistency,
            repeated <= args.max_repetition,
        )
        failed.append([name for name, ok in zip(CHECKS, passes) if not ok])
    return failed


def select_completions(completions: list[str], reasons: list[str | None], max_per_prompt: int) -> list[str | None]:
    """Apply deduplication and the cap to one prompt's completions (in sampling order): the final reason of each,
    None for the kept ones (at most ``max_per_prompt``)."""
    seen, kept, final = set(), 0, []
    for text, reason in zip(completions, reasons):
        if reason is None and normalise(text) in seen:
            reason = "duplicate"
        elif reason is None and kept >= max_per_prompt:
            reason = "over_limit"
        if reason is None:
            seen.add(normalise(text))
            kept += 1
        final.append(reason)
    return final


def empty_stats() -> dict[str, Any]:
    return {
        "prompts": 0,
        "completions": 0,
        "accepted": 0,
        "prompts_with_accepted": 0,
        "rejected": {r: 0 for r in REASONS},
        "failed": {c: 0 for c in CHECKS},
    }


def add_group(stats: dict[str, Any], final: list[str | None], failed: list[list[str]] | None = None) -> None:
    """Count one prompt's ``final`` reasons (``rejected``: one reason per completion, the first failed check)
    and every failed check (``failed``: a completion counts once for each check it fails) into ``stats``."""
    stats["prompts"] += 1
    stats["completions"] += len(final)
    accepted = sum(r is None for r in final)
    stats["accepted"] += accepted
    stats["prompts_with_accepted"] += int(accepted > 0)
    for reason in final:
        if reason is not None:
            stats["rejected"][reason] += 1
    for checks in failed or []:
        for check in checks:
            stats["failed"][check] += 1


def finish_stats(by_source: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add ``acceptance_rate`` (accepted / completions) to each source and an ``all`` total."""
    total = empty_stats()
    for stats in by_source.values():
        for key in ("prompts", "completions", "accepted", "prompts_with_accepted"):
            total[key] += stats[key]
        for kind in ("rejected", "failed"):
            for reason, count in stats[kind].items():
                total[kind][reason] += count
    out = {**by_source, "all": total}
    for stats in out.values():
        stats["acceptance_rate"] = stats["accepted"] / stats["completions"] if stats["completions"] else 0.0
    return out


def run_sample(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: GRPOArguments,
    vllm_args: VLLMArguments,
    sample: SampleArguments,
) -> str:
    """Sample, filter and write ``output_dir/data.jsonl`` and ``output_dir/stats.json``; returns the data path.
    The arguments are those :func:`parse_sample_args` returns, in its order."""
    import torch
    from accelerate.utils import set_seed

    from grpo.data import THINK_PREFILL, build_prompt_dataset
    from grpo.io import write_json, write_jsonl
    from grpo.model import load_policy, load_tokenizer
    from grpo.samplers import build_run_sampler

    set_seed(args.seed)
    model_args.use_peft = False  # sample from the model as it is (no fresh LoRA adapter)
    tokenizer = load_tokenizer(model_args)
    rows = build_prompt_dataset(data_args, tokenizer).rows[sample.prompt_offset :]
    rows = rows[: sample.num_prompts] if sample.num_prompts is not None else rows
    model = load_policy(model_args).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    sampler = build_run_sampler(model, tokenizer, args, vllm_args)  # the recipe's vllm_* settings too
    default_source = os.path.basename(data_args.dataset_name.rstrip("/"))
    kept, by_source, k = [], {}, sample.num_samples
    prefix = THINK_PREFILL if data_args.think_prefill else ""  # stored completions always open <think>
    for start in range(0, len(rows), sample.sample_batch_size):
        chunk = rows[start : start + sample.sample_batch_size]
        rollout = sampler.generate([r["prompt_ids"] for r in chunk], k)
        texts, lengths = rollout.completions, rollout.completion_mask.sum(1).tolist()  # [B*K], [B*K] tokens
        failed = failed_checks(
            texts,
            [r["solution"] for r in chunk for _ in range(k)],
            rollout.truncated.tolist(),
            sample,
            data_args.think_prefill,
        )
        reasons = [f[0] if f else None for f in failed]
        for b, row in enumerate(chunk):
            group = slice(b * k, (b + 1) * k)
            final = select_completions(texts[group], reasons[group], sample.max_per_prompt)
            source = str(row.get("source") or default_source)
            add_group(by_source.setdefault(source, empty_stats()), final, failed[group])
            kept += [
                {
                    "problem": row["problem"],
                    "prompt": row["prompt"],
                    "completion": prefix + text,
                    "solution": row["solution"],
                    "source": source,
                    "length": int(n),
                }
                for text, n, reason in zip(texts[group], lengths[group], final)
                if reason is None
            ]
        print(f"grpo sample: {start + len(chunk)}/{len(rows)} prompts, {len(kept)} completions kept")
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(
        os.path.join(args.output_dir, "stats.json"),
        {"model": model_args.model_name_or_path, "sources": finish_stats(by_source), "arguments": asdict(sample)},
    )
    path = os.path.join(args.output_dir, "data.jsonl")
    write_jsonl(path, kept)
    return path


def parse_sample_args(argv: list[str]):
    """``[RECIPE.yaml] [--field value ...]`` into Model/Data/GRPO/vLLM arguments and :class:`SampleArguments`
    (:func:`grpo.config.parse_config`), in :func:`run_sample`'s order."""
    return parse_config(argv, SAMPLE_CLASSES)


def sample_main(argv: list[str]) -> int:
    """``grpo sample RECIPE.yaml [--model_name_or_path TEACHER] [--num_samples K] ...``: prints the data path."""
    import json

    configs = parse_sample_args(argv)
    path = run_sample(*configs)
    args = configs[2]
    with open(os.path.join(args.output_dir, "stats.json")) as f:
        print(json.dumps(json.load(f)["sources"]))
    print(path)
    return 0
