"""``grpo sft``: supervised fine-tuning through trl's ``SFTTrainer``, loss on completions only.

Used for DeepSeek-R1's cold start (§2.3.1), for SFT on rejection-sampled data (§2.3.3) and for distillation
into smaller students (§2.4). A recipe has the fields of ``ModelArguments`` (the model, LoRA or full: the same
loading as ``grpo train``), ``DataArguments`` (``dataset_name`` is the SFT JSONL; ``prompt_template``,
``system_prompt``, ``instruction``, ``think_prefill`` render prompts exactly as GRPO does) and
:class:`SFTArguments`. Rows may be

* ``{problem, completion}`` (``grpo cold_start`` and ``grpo sample`` output; also ``question``): the prompt is
  rendered from the problem with :func:`grpo.data.recipe_prompt`, so RL starts where SFT ended, and a
  teacher's traces are re-rendered with the student's template (distillation);
* ``{prompt, completion}`` with a rendered prompt string, used as is;
* ``{messages: [...]}`` (chat format): the last assistant message is the completion, the messages before it
  are rendered with the tokenizer's chat template (``add_generation_prompt``).

Completions in files start with ``<think>``; when ``think_prefill`` opens ``<think>`` in the prompt, it is
removed from the completion. The output is ``output_dir/model``: a standalone transformers folder (LoRA merged)
that the next stage loads as ``model_name_or_path``. Under ``accelerate launch`` the usual Trainer
distribution applies (the same accelerate configs as ``grpo train``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from grpo.config import DataArguments, JsonDict, ModelArguments, checked_trackers, parse_config
from grpo.config import help_field as _help
from grpo.data import PROMPT_COLUMNS, THINK_PREFILL, load_rows, recipe_prompt
from grpo.export import save_standalone


@dataclass
class SFTArguments:
    """Optimisation and output of ``grpo sft``; every other ``trl.SFTConfig`` field goes through ``sft_kwargs``."""

    output_dir: str = _help(
        "Folder for the final model (output_dir/model) and trainer checkpoints.", default="outputs/sft"
    )
    seed: int = _help("Seed of the run (data order, LoRA init).", default=42)
    num_train_epochs: float = _help("Passes over the data (ignored when max_steps > 0).", default=2.0)
    max_steps: int = _help("Optimizer steps; -1 = num_train_epochs.", default=-1)
    learning_rate: float = _help("Peak AdamW learning rate.", default=1e-5)
    lr_scheduler_type: str = _help(
        "transformers scheduler name (`constant`, `cosine`, `linear`, ...).", default="cosine"
    )
    warmup_steps: float = _help(
        "Linear warmup: a number of steps, or a share of all steps when in [0, 1).", default=0.03
    )
    weight_decay: float = _help("AdamW decoupled weight decay.", default=0.0)
    max_grad_norm: float = _help("Gradient-norm clip.", default=1.0)
    per_device_train_batch_size: int = _help("Sequences per micro-batch on each process.", default=8)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    max_length: int = _help(
        "Tokens per prompt+completion; longer rows are dropped (and counted), never truncated.", default=1024
    )
    mixed_precision: str = _help(
        "`auto` (bf16 on GPUs that support it, else fp32), `no`, `bf16` or `fp16`.", default="auto"
    )
    logging_steps: int = _help("Log the loss every N steps.", default=5)
    save_steps: int = _help("Trainer checkpoint every N steps (0 = none; a rerun resumes from the newest).", default=0)
    report_to: list[str] = _help("Trackers: none, wandb, tensorboard.", default_factory=lambda: ["none"])
    sft_kwargs: JsonDict = _help(
        'Any other trl.SFTConfig field, e.g. {"packing": true} (JSON on the command line).', default_factory=dict
    )

    def __post_init__(self) -> None:
        self.sft_kwargs = dict(JsonDict(self.sft_kwargs))
        self.report_to = checked_trackers(self.report_to)
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")


SFT_CLASSES = (ModelArguments, DataArguments, SFTArguments)  # the argument classes of a `grpo sft` recipe


def sft_example(row: dict[str, Any], where: str, tokenizer, data_args: DataArguments) -> dict[str, str]:
    """One row as ``{"prompt": text, "completion": text}`` (see the module doc for the accepted layouts).

    Raises ``ValueError`` naming ``where`` (file and row) when the row has none of them.
    """
    if isinstance(row.get("messages"), list) and row["messages"]:
        messages = row["messages"]
        if messages[-1].get("role") != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's (the completion)")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        return {"prompt": prompt, "completion": str(messages[-1]["content"])}
    if not isinstance(row.get("completion"), str):
        raise ValueError(f"{where}: no 'completion' string and no 'messages' list; columns are {sorted(row)}")
    problem = next((row[c] for c in ("problem", "question") if isinstance(row.get(c), str)), None)
    if problem is not None:
        prompt = recipe_prompt(problem, tokenizer, data_args)
    elif isinstance(row.get("prompt"), str):
        prompt = row["prompt"]
    else:
        raise ValueError(f"{where}: needs a problem (one of {PROMPT_COLUMNS}) or a rendered 'prompt' string")
    completion = row["completion"]
    if prompt.endswith(THINK_PREFILL) and completion.startswith(THINK_PREFILL):
        completion = completion[len(THINK_PREFILL) :]
    return {"prompt": prompt, "completion": completion}


def build_sft_examples(data_args: DataArguments, tokenizer, max_length: int) -> tuple[list[dict[str, str]], int]:
    """Prompt/completion pairs of ``data_args.dataset_name`` that fit ``max_length`` tokens (with EOS), at most
    ``max_train_samples``; returns them and how many were dropped for length."""
    rows = load_rows(data_args)
    examples, dropped = [], 0
    for i, row in enumerate(rows):
        example = sft_example(row, f"{data_args.dataset_name}, row {i}", tokenizer, data_args)
        n = len(tokenizer(example["prompt"] + example["completion"], add_special_tokens=False)["input_ids"]) + 1
        if n > max_length:
            dropped += 1
            continue
        examples.append(example)
        if data_args.max_train_samples is not None and len(examples) >= data_args.max_train_samples:
            break
    if not examples:
        raise ValueError(f"{data_args.dataset_name}: no row fits max_length={max_length} ({dropped} dropped)")
    return examples, dropped


def sft_config(args: SFTArguments):
    """The ``trl.SFTConfig`` of a run: our fields, then ``sft_kwargs``; loss on completions only."""
    from trl import SFTConfig

    from grpo.model import resolve_mixed_precision

    precision = resolve_mixed_precision(args.mixed_precision)
    return SFTConfig(
        output_dir=os.path.join(args.output_dir, "checkpoints"),
        seed=args.seed,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_length=args.max_length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to=[t for t in args.report_to if t != "none"] or "none",
        completion_only_loss=True,
        **args.sft_kwargs,
    )


def run_sft(model_args: ModelArguments, data_args: DataArguments, args: SFTArguments) -> str:
    """Fine-tune and write the standalone model to ``output_dir/model`` (atomically); returns its path."""
    import datasets
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    from grpo.model import load_policy, load_tokenizer

    tokenizer = load_tokenizer(model_args)
    tokenizer.padding_side = "right"
    examples, dropped = build_sft_examples(data_args, tokenizer, args.max_length)
    print(f"grpo sft: {len(examples)} examples from {data_args.dataset_name} ({dropped} over max_length dropped)")
    config = sft_config(args)
    trainer = SFTTrainer(
        model=load_policy(model_args),
        args=config,
        train_dataset=datasets.Dataset.from_list(examples),
        processing_class=tokenizer,
    )
    resume = get_last_checkpoint(config.output_dir) if os.path.isdir(config.output_dir) else None
    trainer.train(resume_from_checkpoint=resume)
    if not trainer.is_world_process_zero():
        return os.path.join(args.output_dir, "model")
    return save_standalone(trainer.model, tokenizer, os.path.join(args.output_dir, "model"))


def parse_sft_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, SFTArguments]:
    """``[RECIPE.yaml] [--field value ...]`` into the three dataclasses, parsed as ``grpo train`` parses."""
    return parse_config(argv, SFT_CLASSES)  # type: ignore[return-value]


def sft_main(argv: list[str]) -> int:
    """``grpo sft RECIPE.yaml [--field value ...]``: prints the model folder."""
    print(run_sft(*parse_sft_args(argv)))
    return 0
