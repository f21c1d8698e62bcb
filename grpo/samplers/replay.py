"""A sampler that never runs the model: completions are a fixed function of the prompt (for tests).

Runs with different numbers of processes, or under DeepSpeed, then train on identical completions, so
their updates can be compared exactly (``sampler: replay``). The texts mix R1-formatted answers, bare
answers and filler, so rule-based rewards differ inside a group and advantages are not all zero.
"""

from __future__ import annotations

import time
import zlib

import torch

from grpo.samplers.base import Sampler, SamplingConfig
from grpo.samplers.decode import default_eos_ids, left_pad
from grpo.types import Rollout

TEMPLATES = (
    "<think>\n{a} and {b} make {n}\n</think>\n<answer>\n{n}\n</answer>",
    "<answer>{n}</answer>",
    "The answer is {n}.",
    "Let me check: {a}, {b}, {n}, {a}, {b}, {n}, {a}, {b}, {n}, {a}, {b}, {n}, {a}, {b}, {n}, {a}, {b}, {n}",
)


def replay_text(prompt_ids: list[int], index: int) -> tuple[str, bool]:
    """Completion ``index`` of the group of ``prompt_ids``: its text and whether it ends with EOS.

    A deterministic function of the token ids (CRC-32, independent of ``PYTHONHASHSEED``): template
    ``(h + index) % 4``, so a group of G >= 4 holds every template.
    """
    h = zlib.crc32(" ".join(map(str, prompt_ids)).encode())
    a, b, n = h % 10, (h >> 4) % 10, (h >> 8) % 20 + index
    return TEMPLATES[(h + index) % len(TEMPLATES)].format(a=a, b=b, n=n), (h >> 16) % 3 != 0


class ReplaySampler(Sampler):
    """G fixed completions per prompt (:func:`replay_text`), tokenised, cut at ``max_completion_length``."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: SamplingConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.eos_id = default_eos_ids(model, tokenizer)[0]

    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """``Rollout`` of B*G rows (prompt b at rows b*G .. b*G+G-1); no ``sampler_logprobs``."""
        t_max = self.config.max_completion_length
        completions: list[list[int]] = []
        for prompt in prompt_ids:
            for i in range(num_generations):
                text, ends = replay_text(prompt, i)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + ([self.eos_id] if ends else [])
                completions.append(ids[:t_max])
        width = max(len(c) for c in completions)
        completion_ids = torch.full((len(completions), width), self.tokenizer.pad_token_id, dtype=torch.long)  # [N, T]
        completion_mask = torch.zeros_like(completion_ids)  # [N, T]
        for row, ids in enumerate(completions):
            completion_ids[row, : len(ids)] = torch.tensor(ids)
            completion_mask[row, : len(ids)] = 1
        truncated = torch.tensor([c[-1] != self.eos_id for c in completions])  # [N]
        prompts, prompt_mask = left_pad(
            [p for p in prompt_ids for _ in range(num_generations)], self.tokenizer.pad_token_id
        )  # [N, P]
        texts = self.tokenizer.batch_decode(
            completion_ids.masked_fill(completion_mask == 0, self.eos_id), skip_special_tokens=True
        )
        return Rollout(prompts, prompt_mask, completion_ids, completion_mask, truncated, texts)

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Nothing to copy: the completions do not depend on the weights."""
        start = time.perf_counter()
        self.model = model
        return time.perf_counter() - start
