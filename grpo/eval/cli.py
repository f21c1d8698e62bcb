"""``grpo eval --benchmarks ...``: benchmark evaluation with test-time compute (pass@k, maj@k, best-of-N,
thinking budgets), written to an output folder (see :mod:`grpo.eval.runner` and :mod:`grpo.eval.report`).

    grpo eval [RECIPE.yaml] --model PATH_OR_NAME --benchmarks gsm8k,math500,aime24,amc23 --num_samples 16 \\
        [--thinking_budgets 512,1024,2048] [--verifiers reward:format,rm:PATH,self] [--out_dir DIR]

A recipe, when given, supplies the model, the prompt template and ``max_completion_length``; flags override it.
Re-running with the same ``--out_dir`` resumes: problems already in ``samples.jsonl`` are not sampled again.
``--rescore`` samples nothing and scores the stored completions again with ``--verifiers`` (a verifier added
after the run), then rewrites the summary, table and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, replace

import torch

from grpo.config import PROMPT_TEMPLATES, DataArguments, ModelArguments
from grpo.eval.benchmarks import load_benchmarks, resolve_benchmark
from grpo.eval.report import markdown_table, summarize, write_outputs
from grpo.eval.runner import EvalSettings, run_benchmarks
from grpo.io import write_json
from grpo.samplers.base import SAMPLERS

SAMPLES_FILE, RUN_FILE = "samples.jsonl", "run.json"
# Settings that may change when a run is resumed (the problems and budgets evaluated, the batching).
NOT_IN_FINGERPRINT = (
    "batch_size",
    "seed",
    "budgets",
    "timeout_seconds",
    "benchmarks",
    "limit",
    "levels",
    "heldout_from",
)
RECIPE_DATA_FIELDS = ("dataset_name", "dataset_config", "dataset_split", "dataset_size", "dataset_seed")
TEMPLATE_FIELDS = ("prompt_template", "system_prompt", "instruction", "think_prefill")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _csv(text)]


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def _escaped(text: str) -> str:
    """``\\n`` and ``\\t`` typed on a command line as the characters they stand for."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _min_tokens(text: str) -> int | str:
    return "budget" if text == "budget" else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grpo eval",
        description="Benchmark evaluation with test-time compute.",
        epilog="Without --benchmarks, `grpo eval RECIPE.yaml --model PATH [--out FILE]` evaluates greedily on the "
        "recipe's data set with the recipe's rewards.",
    )
    p.add_argument("recipe", nargs="?", help="optional recipe: default model, prompt template, max_completion_length")
    p.add_argument("--model", help="model name, folder or hub id (default: the recipe's)")
    p.add_argument(
        "--benchmarks",
        type=_csv,
        required=True,
        help="comma-separated: gsm8k, math500, aime24, amc23, recipe (the recipe's own data set), or .jsonl files",
    )
    p.add_argument(
        "--heldout_from",
        default=None,
        help="with the recipe benchmark: a training run's output_dir; only the problems it never drew",
    )
    p.add_argument("--num_samples", type=int, default=1, help="K completions per problem")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (R1: 0.6; 0 = greedy)")
    p.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling (R1: 0.95)")
    p.add_argument("--top_k", type=int, default=0, help="top-k sampling (0 = off)")
    p.add_argument(
        "--max_completion_length", type=int, default=None, help="tokens per completion (default: recipe's, else 1024)"
    )
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--levels", type=_ints, default=None, help="MATH-500 levels to keep, e.g. 1,2")
    p.add_argument(
        "--data_dir", default=None, help="folder of local benchmark files (default: ../shared/data, else the hub)"
    )
    p.add_argument("--out_dir", default=None, help="output folder (default: outputs/eval/<model name>)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming from out_dir")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="sample nothing: score the completions stored in out_dir again with --verifiers",
    )
    g = p.add_argument_group("prompt template (as in training; default: the recipe's)")
    g.add_argument("--prompt_template", choices=PROMPT_TEMPLATES, default=None)
    g.add_argument("--system_prompt", default=None)
    g.add_argument("--instruction", default=None)
    g.add_argument("--think_prefill", type=_bool, nargs="?", const=True, default=None)
    _add_budget_arguments(p.add_argument_group("thinking budgets"))
    _add_engine_arguments(p.add_argument_group("verifiers and engine"))
    return p


def _add_budget_arguments(g) -> None:
    g.add_argument(
        "--thinking_budgets", type=_ints, default=None, help="sweep of thinking-token caps, e.g. 256,512,1024"
    )
    g.add_argument("--min_thinking_tokens", type=_min_tokens, default=0, help="s1 minimum (int, or 'budget')")
    g.add_argument("--max_waits", type=int, default=None, help="most 'Wait' insertions per completion")
    g.add_argument(
        "--max_answer_tokens", type=int, default=None, help="answer cap after thinking (default: max_completion_length)"
    )
    g.add_argument("--wait_text", type=_escaped, default="Wait", help="replaces an early </think> (s1)")
    g.add_argument(
        "--close_text", type=_escaped, default="\n</think>\n", help="inserted at the cap (\\n for a newline)"
    )


def _add_engine_arguments(g) -> None:
    g.add_argument("--verifiers", type=_csv, default=[], help="best-of-N verifiers: reward:<name>, rm:<path>, self")
    g.add_argument(
        "--reward_kwargs",
        type=json.loads,
        default=None,
        help='settings of reward verifiers as JSON, e.g. \'{"format": {"strict": false}}\' (default: the recipe\'s)',
    )
    g.add_argument(
        "--sampler",
        choices=("auto", *(name for name in SAMPLERS if name != "replay")),  # replay: fixed completions, for tests
        default="auto",
        help="auto: vllm on a GPU if installed, else hf",
    )
    g.add_argument("--batch_size", type=int, default=64, help="sequences (problems x K) per generate call")
    g.add_argument(
        "--dtype", choices=("auto", *DTYPES), default="auto", help="auto: bfloat16 on a GPU that has it, else float32"
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--timeout_seconds", type=float, default=5.0, help="math-verify limit per comparison")


def resolve_configs(
    ns: argparse.Namespace, recipe_flags: tuple[str, ...] = ()
) -> tuple[ModelArguments, DataArguments, int, dict]:
    """Model and data arguments, ``max_completion_length`` and the reward verifiers' settings (``reward_kwargs``):
    the recipe's (or the defaults), then ``recipe_flags`` (fields of the recipe, e.g. ``--dataset_seed 7`` for a
    fresh draw of a generated task), then the flags. Raises ``ConfigError`` for recipe flags without a recipe."""
    if recipe_flags and not (ns.recipe and os.path.isfile(ns.recipe)):  # without a recipe, argparse may take
        from grpo.config import ConfigError  # a flag's value for the recipe: name the flags, not that value

        raise ConfigError(f"unknown arguments {' '.join(recipe_flags)} (recipe fields need a recipe file)")
    if ns.recipe:
        from grpo.config import parse_config

        model_args, data_args, args, _ = parse_config([ns.recipe, *recipe_flags])
        max_len, reward_kwargs = args.max_completion_length, args.reward_kwargs
    else:
        model_args, data_args, max_len, reward_kwargs = ModelArguments(), DataArguments(), 1024, {}
    if ns.reward_kwargs is not None:
        reward_kwargs = ns.reward_kwargs
    if ns.model:
        model_args.model_name_or_path = ns.model
    model_args.use_peft = False
    overrides = {
        k: getattr(ns, k)
        for k in ("prompt_template", "system_prompt", "instruction", "think_prefill")
        if getattr(ns, k) is not None
    }
    return model_args, replace(data_args, **overrides), ns.max_completion_length or max_len, reward_kwargs


def settings_from(ns: argparse.Namespace, max_len: int) -> EvalSettings:
    return EvalSettings(
        num_samples=ns.num_samples,
        max_completion_length=max_len,
        temperature=ns.temperature,
        top_p=ns.top_p,
        top_k=ns.top_k,
        budgets=tuple(ns.thinking_budgets or [None]),
        min_thinking_tokens=ns.min_thinking_tokens,
        max_waits=ns.max_waits,
        max_answer_tokens=ns.max_answer_tokens,
        close_text=ns.close_text,
        wait_text=ns.wait_text,
        batch_size=ns.batch_size,
        timeout_seconds=ns.timeout_seconds,
        seed=ns.seed,
    )


def prepare_out_dir(out_dir: str, run: dict, overwrite: bool, rescore: bool = False) -> str:
    """Create ``out_dir`` and write ``run.json`` (the run's settings); return the samples path. Resuming
    needs the same settings but those in ``NOT_IN_FINGERPRINT`` (and the verifiers when ``rescore``): raises
    ``ValueError`` naming the fields that differ (unless ``overwrite``, which starts over), or
    ``FileNotFoundError`` when ``rescore`` finds no samples."""
    if rescore and (overwrite or not os.path.isfile(os.path.join(out_dir, SAMPLES_FILE))):
        raise FileNotFoundError(
            f"--rescore needs the samples of an earlier run in {out_dir}/{SAMPLES_FILE} (and no --overwrite)"
        )
    os.makedirs(out_dir, exist_ok=True)
    samples, run_path = os.path.join(out_dir, SAMPLES_FILE), os.path.join(out_dir, RUN_FILE)
    if overwrite and os.path.exists(samples):
        os.remove(samples)
    if os.path.exists(samples) and os.path.exists(run_path):
        with open(run_path) as f:
            old = json.load(f)
        free = (*NOT_IN_FINGERPRINT, "verifiers", "reward_kwargs") if rescore else NOT_IN_FINGERPRINT
        changed = sorted(k for k in set(old) | set(run) if k not in free and old.get(k) != run.get(k))
        if changed:
            raise ValueError(
                f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                f"pass --overwrite or another --out_dir"
            )
    write_json(run_path, run)
    return samples


def _dtype(name: str) -> torch.dtype:
    from grpo.model import auto_dtype

    return auto_dtype() if name == "auto" else DTYPES[name]


def benchmark_main(argv: list[str]) -> int:
    """Run ``grpo eval --benchmarks ...``; prints the Markdown table and the paths written."""
    from grpo.eval.runner import rescore
    from grpo.eval.verifiers import build_verifier
    from grpo.model import load_policy, load_tokenizer
    from grpo.samplers import build_sampler, resolve_sampler_name

    ns, recipe_flags = build_parser().parse_known_args(argv)  # the rest: fields of the recipe
    model_args, data_args, max_len, reward_kwargs = resolve_configs(ns, tuple(recipe_flags))
    settings = settings_from(ns, max_len)
    benchmarks = [resolve_benchmark(b) for b in ns.benchmarks]
    name = model_args.model_name_or_path
    out_dir = ns.out_dir or os.path.join("outputs", "eval", re.sub(r"[^\w.-]+", "_", name.rstrip("/")).strip("_"))
    run = {
        "model": name,
        "dtype": ns.dtype,
        "verifiers": ns.verifiers,
        "benchmarks": [b.name for b in benchmarks],
        "limit": ns.limit,
        "levels": ns.levels,
        "heldout_from": ns.heldout_from,
        **{k: getattr(data_args, k) for k in TEMPLATE_FIELDS},
        **asdict(settings),
    }
    used = {
        n: reward_kwargs[n]
        for s in ns.verifiers
        if (n := s.partition(":")[2]) in reward_kwargs and s.startswith("reward:")
    }
    if used:  # the reward verifiers' settings, when any (absent from runs without them)
        run["reward_kwargs"] = used
    if "recipe" in run["benchmarks"]:  # which data set the recipe benchmark's indices point into
        run["recipe_data"] = {k: getattr(data_args, k) for k in RECIPE_DATA_FIELDS}
        run["recipe_data"]["reasoning_gym_kwargs"] = data_args.reasoning_gym_kwargs
    samples_path = prepare_out_dir(out_dir, run, ns.overwrite, rescore=ns.rescore)
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(model_args)
    needs_model = not ns.rescore or any(not spec.startswith("reward:") for spec in ns.verifiers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_policy(model_args, _dtype(ns.dtype)).to(device).eval() if needs_model else None
    rows = load_benchmarks(
        ns.benchmarks,
        tokenizer,
        data_args,
        data_dir=ns.data_dir,
        limit=ns.limit,
        levels=ns.levels,
        heldout_from=ns.heldout_from,
    )
    verifiers = {
        spec: build_verifier(
            spec, model=model, tokenizer=tokenizer, think_prefilled=data_args.think_prefill, reward_kwargs=reward_kwargs
        )
        for spec in ns.verifiers
    }
    if ns.rescore:
        records = rescore(samples_path, rows, verifiers, tokenizer)
    else:
        sampler = build_sampler(resolve_sampler_name(ns.sampler), model, tokenizer, settings.sampling_config())
        records = run_benchmarks(
            sampler, tokenizer, rows, correctness_rewards(benchmarks, settings), verifiers, settings, samples_path
        )
    paths = write_outputs(out_dir, records, run)
    print(markdown_table(summarize(records)))
    print(json.dumps({"samples": samples_path, **paths}), file=sys.stderr)
    return 0


def correctness_rewards(benchmarks: list, settings: EvalSettings) -> dict:
    """``{benchmark name: reward}``: each benchmark's correctness reward (TRL convention, 1.0 = correct), with
    the math-verify time limit of ``settings`` where the reward takes one."""
    from grpo.scoring import fill_run_settings
    from rewards import get_reward_funcs

    out = {}
    for bench in benchmarks:
        kwargs = fill_run_settings([bench.reward], {bench.reward: {}}, {"timeout_seconds": settings.timeout_seconds})
        out[bench.name] = get_reward_funcs([bench.reward], kwargs)[0]
    return out
