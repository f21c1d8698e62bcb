"""Prompts and gold answers: data sources, gold-answer extraction and prompt templates.

Every source becomes a list of rows ``{"problem", "solution", "prompt", "prompt_ids", ...}``:
``problem`` is the question text, ``solution`` the gold answer (what ``rewards.accuracy_reward``
receives), ``prompt`` the rendered prompt text and ``prompt_ids`` its tokens. The source's other
columns are kept and reach the reward functions as keyword lists (TRL's convention).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from grpo.config import DataArguments
from grpo.io import read_jsonl
from rewards.extract import extract_gold

REASONING_GYM_PREFIX = "reasoning_gym:"

# DeepSeek-AI 2025, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via RL", Table 1.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {problem}. Assistant:"
)
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. First think through the problem step by step, then give the final answer. "
    "Use exactly this format:\n<think>\nyour reasoning\n</think>\n<answer>\nthe final answer only\n</answer>"
)
PROMPT_COLUMNS = ("question", "problem", "prompt")
ANSWER_COLUMNS = ("answer", "solution")


@dataclass
class PromptDataset:
    """Rendered, tokenised prompts that fit ``max_prompt_length``, plus how many were dropped."""

    rows: list[dict[str, Any]]
    num_dropped: int = 0
    source: str = ""
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


# --- sources --------------------------------------------------------------------------------------


def _load_local(path: str, split: str) -> list[dict[str, Any]]:
    if os.path.isdir(path):
        for ext in (".jsonl", ".json", ".parquet"):
            candidate = os.path.join(path, split + ext)
            if os.path.isfile(candidate):
                return _load_local(candidate, split)
        raise FileNotFoundError(f"{path}: no {split}.jsonl, {split}.json or {split}.parquet inside")
    if path.endswith(".jsonl"):
        return [row for _, row in read_jsonl(path)]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return data
    if path.endswith(".parquet"):
        import datasets

        return list(datasets.load_dataset("parquet", data_files=path, split="train"))
    raise ValueError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")


def _load_reasoning_gym(task: str, args: DataArguments) -> list[dict[str, Any]]:
    import reasoning_gym

    entries = reasoning_gym.create_dataset(
        task, size=args.dataset_size, seed=args.dataset_seed, **args.reasoning_gym_kwargs
    )
    return [
        {"question": e["question"], "answer": str(e["answer"]), "reasoning_gym_entry": json.loads(json.dumps(e))}
        for e in entries
    ]


def load_rows(args: DataArguments) -> list[dict[str, Any]]:
    """Raw rows of the configured source: reasoning-gym task, local file or folder, or hub data set."""
    name = args.dataset_name
    if name.startswith(REASONING_GYM_PREFIX):
        return _load_reasoning_gym(name[len(REASONING_GYM_PREFIX) :], args)
    if os.path.exists(name):
        return _load_local(name, args.dataset_split)
    if name.endswith((".jsonl", ".json", ".parquet")):
        raise FileNotFoundError(f"data file not found: {name}")
    import datasets

    return list(datasets.load_dataset(name, args.dataset_config, split=args.dataset_split))


def _pick_column(
    rows: list[dict[str, Any]], chosen: str | None, candidates: tuple[str, ...], what: str, source: str
) -> str:
    available = list(rows[0]) if rows else []
    if chosen is not None:
        if chosen not in available:
            raise ValueError(f"{source}: {what} column {chosen!r} not found; columns are {available}")
        return chosen
    for name in candidates:
        if name in available:
            return name
    raise ValueError(
        f"{source}: no {what} column (looked for {list(candidates)}); columns are {available}; set {what}_column"
    )


# --- prompts --------------------------------------------------------------------------------------

THINK_PREFILL = "<think>\n"


def render_prompt(
    problem: str,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    system_prompt: str | None = None,
    instruction: str | None = None,
    think_prefill: bool = False,
) -> str:
    """Prompt text for ``problem``.

    ``r1``: the R1-Zero plain template. ``chat``: the tokenizer's chat template with a system message
    (``system_prompt``; None -> ``DEFAULT_SYSTEM_PROMPT``, "" -> none) and the problem, followed by
    ``instruction`` if given, as the user turn. ``think_prefill`` appends an opened ``<think>`` line.
    """
    user = problem.strip() + (f"\n{instruction}" if instruction else "")
    if template == "r1":
        text = R1_ZERO_TEMPLATE.format(problem=user)
    else:
        system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + (THINK_PREFILL if think_prefill else "")


def recipe_prompt(problem: str, tokenizer: PreTrainedTokenizerBase, args: DataArguments) -> str:
    """:func:`render_prompt` with the recipe's template, system prompt, instruction and think pre-fill (the one
    place training, evaluation and SFT data turn a problem into the prompt text)."""
    return render_prompt(
        problem, tokenizer, args.prompt_template, args.system_prompt, args.instruction, args.think_prefill
    )


def build_prompt_dataset(args: DataArguments, tokenizer: PreTrainedTokenizerBase) -> PromptDataset:
    """Load, extract gold answers, render and tokenise prompts; drop (and count) prompts over ``max_prompt_length``.

    Raises ``ValueError`` naming the source and row for a missing column or an unreadable gold answer,
    and when no prompt fits ``max_prompt_length``.
    """
    source = args.dataset_name
    rows = load_rows(args)
    if not rows:
        raise ValueError(f"{source}: no rows")
    prompt_col = _pick_column(rows, args.prompt_column, PROMPT_COLUMNS, "prompt", source)
    answer_col = _pick_column(rows, args.answer_column, ANSWER_COLUMNS, "answer", source)
    kept, dropped = [], 0
    for i, row in enumerate(rows):
        try:
            gold = extract_gold(row[answer_col], args.answer_format) or ""  # empty: the accuracy reward gives None
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"{source}, row {i}: cannot read the gold answer from column {answer_col!r}: {err}"
            ) from err
        problem = str(row[prompt_col])
        prompt = recipe_prompt(problem, tokenizer, args)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > args.max_prompt_length:
            dropped += 1
            continue
        extra = {k: v for k, v in row.items() if k not in (prompt_col, answer_col, "prompt", "solution")}
        kept.append({**extra, "problem": problem, "solution": gold, "prompt": prompt, "prompt_ids": ids})
        if args.max_train_samples is not None and len(kept) >= args.max_train_samples:
            break
    if not kept:
        raise ValueError(f"{source}: all {dropped} prompts are longer than max_prompt_length={args.max_prompt_length}")
    columns = [k for k in kept[0] if k != "prompt_ids"]
    return PromptDataset(rows=kept, num_dropped=dropped, source=source, columns=columns)


class PromptSampler:
    """Deterministic, resumable prompt order: a fresh seeded permutation each epoch.

    Every process draws the same global batch of ``batch_size * num_processes`` indices and keeps
    its own slice, so processes see disjoint prompts and the position (batches drawn) is one integer.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0):
        self.global_batch = global_batch_size(num_rows, batch_size, num_processes)
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.process_index = process_index
        self.batches_drawn = 0

    def _global_indices(self, batch: int) -> list[int]:
        per_epoch = self.num_rows // self.global_batch  # the incomplete tail of each epoch is skipped
        epoch, offset = divmod(batch, per_epoch)
        order = epoch_order(self.num_rows, self.seed, epoch)
        return order[offset * self.global_batch : (offset + 1) * self.global_batch]

    def next_indices(self) -> list[int]:
        """This process's prompt indices for the next rollout."""
        indices = self._global_indices(self.batches_drawn)
        self.batches_drawn += 1
        start = self.process_index * self.batch_size
        return indices[start : start + self.batch_size]

    # The prompt-sampler interface the trainer calls (grpo.curriculum.CurriculumSampler has the same methods).

    def observe(self, per_func: torch.Tensor, reward_names: list[str]) -> None:
        """Rewards of the last draw's groups: not used by a fixed order."""

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The position: the whole state (the order is a function of seed and epoch)."""
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_drawn = int(state["batches_drawn"])


def global_batch_size(num_rows: int, batch_size: int, num_processes: int) -> int:
    """Prompts drawn per rollout over all processes. Raises ``ValueError`` when the data set holds fewer."""
    if num_rows < batch_size * num_processes:
        raise ValueError(
            f"the data set has {num_rows} prompts, fewer than one global batch "
            f"({batch_size} prompts x {num_processes} processes)"
        )
    return batch_size * num_processes


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The prompt order of ``epoch``: a permutation of ``range(num_rows)`` seeded with ``seed + epoch``."""
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def warn_if_think_prefilled(dataset: PromptDataset, think_prefill: bool) -> None:
    """Warn when the rendered prompt opens <think> (say, a chat template that pre-fills it) but the recipe does
    not say so (``think_prefill``): the format rewards would then score every completion 0."""
    from rewards import detect_think_prefill

    if not think_prefill and dataset.rows and detect_think_prefill(dataset.rows[0]["prompt"]):
        warnings.warn(
            "the rendered prompt already opens <think>; set think_prefill: true so the format "
            "rewards read completions as starting inside the thinking block",
            stacklevel=3,
        )


def trained_problems(run_dir: str) -> set[str]:
    """The problems a training run in ``run_dir`` actually drew, replayed from its config and newest checkpoint.

    Used to build held-out evaluation sets on generated tasks (where a new seed can repeat training
    problems). Raises ``FileNotFoundError`` when the run has no checkpoint.
    """
    from grpo.checkpoint import list_checkpoints, read_trainer_state
    from grpo.config import load_config
    from grpo.model import load_tokenizer

    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to replay")
    model_args, data_args, args, _ = load_config(os.path.join(checkpoints[-1], "config.yaml"))
    state = read_trainer_state(checkpoints[-1])
    dataset = build_prompt_dataset(data_args, load_tokenizer(model_args))
    if "curriculum" in state:  # drawn by pass rate: the checkpoint lists every prompt drawn
        from grpo.curriculum import drawn_indices

        return {dataset.rows[i]["problem"] for i in drawn_indices(state["curriculum"])}
    drawn = state["batches_drawn"]
    # every process's slice of each global batch: replay as one process drawing the global batch
    sampler = PromptSampler(len(dataset), args.prompts_per_rollout * _num_processes(checkpoints[-1]), args.seed)
    return {dataset.rows[i]["problem"] for _ in range(drawn) for i in sampler.next_indices()}


def _num_processes(checkpoint: str) -> int:
    from grpo.checkpoint import read_trainer_state

    return int(read_trainer_state(checkpoint).get("num_processes", 1))


def heldout_rows(rows: list[dict[str, Any]], exclude: set[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows whose problem is not in ``exclude`` and not a repeat of an earlier row, at most ``limit``."""
    seen, kept = set(exclude), []
    for row in rows:
        if row["problem"] in seen:
            continue
        seen.add(row["problem"])
        kept.append(row)
        if limit is not None and len(kept) >= limit:
            break
    return kept
