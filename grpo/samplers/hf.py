"""A sampler on transformers ``generate``, run on the policy itself (so weight sync costs nothing)."""

from __future__ import annotations

import time

import torch
from transformers import GenerationConfig

from grpo.samplers.base import Sampler, SamplingConfig
from grpo.samplers.decode import left_pad, sample_groups
from grpo.types import Rollout


def completion_mask_from_eos(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[N, T]`` that is 1 up to and including the first EOS, and truncated flags ``[N]`` (no EOS)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))  # [N, T]
    has_eos = is_eos.any(dim=1)  # [N]
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), completion_ids.shape[1])  # [N]
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device)  # [T]
    mask = (positions[None, :] <= first[:, None]).long()  # [N, T]
    return mask, ~has_eos


def first_stop_end(tokenizer, ids: list[int], stop: tuple[str, ...]) -> int | None:
    """Length of the shortest prefix of ``ids`` whose text contains one of the ``stop`` strings
    (the index of the token completing it, plus one), or None when the text has none.

    Generation halts at the token completing a stop string, so that is usually the last token: two
    decodes. Otherwise a binary search over prefixes: O(log T) decodes of at most T tokens.
    """
    def has_stop(j: int) -> bool:
        text = tokenizer.decode(ids[:j], skip_special_tokens=True)
        return any(s in text for s in stop)

    if not stop or not ids or not has_stop(len(ids)):
        return None
    if not has_stop(len(ids) - 1):
        return len(ids)
    lo, hi = 1, len(ids) - 1  # has_stop(hi) holds; find the smallest such j
    while lo < hi:
        mid = (lo + hi) // 2
        if has_stop(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


class HFSampler(Sampler):
    """Batched sampling with ``model.generate``: left padding, temperature, top_p, top_k, stop at EOS
    (and at ``config.stop`` strings, through transformers' ``stop_strings``)."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: SamplingConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = sorted({*eos, tokenizer.eos_token_id})
        # A fresh GenerationConfig: the model's own defaults (say top_k=50) must not leak into sampling,
        # or the sampled distribution would differ from the one the loss assumes.
        # temperature 0 means greedy decoding (evaluation); training always samples.
        sampling = {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p,
                    "top_k": config.top_k or None} if config.temperature > 0 else {"do_sample": False}
        self.generation_config = GenerationConfig(
            **sampling,
            max_new_tokens=config.max_completion_length, eos_token_id=self.eos_ids,
            pad_token_id=tokenizer.pad_token_id, use_cache=True,
            **({"stop_strings": list(config.stop)} if config.stop else {}),
        )

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """Each prompt prefilled once, its KV cache shared by its G completions, finished rows dropped
        from the batch (``grpo.samplers.decode.sample_groups``); returns the sampler's log-probs too."""
        return sample_groups(self.model, prompt_ids, num_generations, self.config, self.tokenizer, self.eos_ids)

    @torch.no_grad()
    def generate_with_transformers(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """The same contract through ``model.generate`` (the reference the fast path is tested against)."""
        repeated = [ids for ids in prompt_ids for _ in range(num_generations)]  # B*G prompts, groups consecutive
        device = next(self.model.parameters()).device
        ids, mask = left_pad(repeated, self.tokenizer.pad_token_id)  # [N, P], [N, P]
        ids, mask = ids.to(device), mask.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            extra = {"tokenizer": self.tokenizer} if self.config.stop else {}
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=self.generation_config,
                                      **extra)
        finally:
            self.model.train(was_training)
        completion_ids = out[:, ids.shape[1]:]  # [N, T]
        completion_mask, truncated = completion_mask_from_eos(completion_ids, self.eos_ids)
        if self.config.stop:
            completion_mask, truncated = self._apply_stop(completion_ids, completion_mask, truncated)
        completion_ids = completion_ids.masked_fill(completion_mask == 0, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(ids, mask, completion_ids, completion_mask, truncated, texts)

    def _apply_stop(self, completion_ids: torch.Tensor, mask: torch.Tensor, truncated: torch.Tensor):
        """Mask ``[N, T]`` and truncated flags ``[N]`` for rows that ended at a stop string: the mask ends
        at the token completing it and the row is not truncated. (``generate`` pads a stopped row, and
        when the pad token is also EOS, :func:`completion_mask_from_eos` would keep one pad.)"""
        rows, ends, flags = completion_ids.tolist(), mask.sum(1).tolist(), truncated.tolist()
        pad = self.tokenizer.pad_token_id
        for i, row in enumerate(rows):
            row = row[: ends[i]]
            while row and row[-1] == pad:  # a stopped row is padded right after its last token
                row.pop()
            end = first_stop_end(self.tokenizer, row, self.config.stop)
            if end is not None:
                ends[i], flags[i] = end, False
        positions = torch.arange(completion_ids.shape[1], device=mask.device)  # [T]
        new_mask = (positions[None, :] < torch.tensor(ends, device=mask.device)[:, None]).long()  # [N, T]
        return new_mask, torch.tensor(flags, dtype=torch.bool, device=truncated.device)

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Nothing to copy: this sampler generates with the policy module itself."""
        start = time.perf_counter()
        self.model = model
        return time.perf_counter() - start
