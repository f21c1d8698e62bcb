"""The ``grpo`` command: ``grpo train``, ``export``, ``eval``, ``score``, ``sft``, ``cold_start``, ``sample``, ``pipeline``,
``plot``, ``serve``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

USAGE = """usage: grpo <command> [args]

commands:
  train RECIPE.yaml [--field value ...]   GRPO training (flags override the recipe)
  export CHECKPOINT OUT_DIR              a standalone Hugging Face model folder (LoRA merged)
  eval RECIPE.yaml --model PATH           held-out accuracy with the recipe's data, template and rewards
  eval --model PATH --benchmarks a,b      benchmarks with test-time compute: pass@k, maj@k, best-of-N, budgets
  score FILE --rewards a,b               score a JSONL of completions with reward functions
  sft RECIPE.yaml [--field value ...]     supervised fine-tuning (trl SFTTrainer), loss on completions only
  cold_start [RECIPE.yaml] [--field ...]  readable <think>/<answer> SFT data from GSM8K or (problem, reasoning, answer)
  sample RECIPE.yaml [--field value ...]  rejection sampling (or a teacher's traces) into SFT data + statistics
  pipeline RECIPE.yaml [--only a,b]       multi-stage DeepSeek-R1 pipeline; finished stages are skipped
  plot OUTPUT_DIR [--eval LABEL=PATH]     PNG training curves from metrics.jsonl; held-out accuracy before/after
  serve MODEL [--port P] [--lora_rank R]  a vLLM server for `sampler: vllm_server` (docs/vllm.md)
"""


def train_main(argv: list[str]) -> int:
    """``grpo train``: parse the recipe and flags, train; 0, or 3 when the collapse guard stopped the run (its
    message, naming the signal and the last good checkpoint, goes to stderr)."""
    from grpo.config import parse_config

    configs = parse_config(argv)  # before the trainer's imports: a bad recipe fails fast
    from grpo.guards import TrainingCollapsed
    from grpo.trainer import GRPOTrainer

    try:
        GRPOTrainer(*configs).train()
    except TrainingCollapsed as stop:
        print(f"grpo train: {stop}", file=sys.stderr)
        return 3
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grpo export", description="Export a checkpoint as a standalone model folder."
    )
    parser.add_argument("checkpoint", help="a checkpoint-<step> folder written by grpo train")
    parser.add_argument("out_dir", help="where to write the model folder")
    ns = parser.parse_args(argv)
    from grpo.export import export_checkpoint

    print(export_checkpoint(ns.checkpoint, ns.out_dir))
    return 0


# Subcommands implemented elsewhere, imported only when run (``module:function``, called with the arguments).
COMMANDS = {
    "train": train_main,
    "export": export_main,
    "eval": "grpo.eval.heldout:eval_main",
    "score": "grpo.score_cli:main",
    "sft": "grpo.r1.sft:sft_main",
    "cold_start": "grpo.r1.cold_start:cold_start_main",
    "sample": "grpo.r1.sample:sample_main",
    "pipeline": "grpo.r1.pipeline:pipeline_main",
    "plot": "grpo.plot:plot_main",
    "serve": "grpo.serve:serve_main",
}


def command(name: str) -> Callable[[list[str]], int]:
    """The function of subcommand ``name`` (it takes the argument list, returns the exit code)."""
    target = COMMANDS[name]
    if callable(target):
        return target
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    """Run ``grpo COMMAND ARGS``; returns the exit code: 2 with a one-line message for a configuration error
    (:class:`grpo.config.ConfigError`, as argparse does for a bad flag), no traceback."""
    from grpo.config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return command(argv[0])(argv[1:])
    except ConfigError as err:
        print(f"grpo {argv[0]}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
