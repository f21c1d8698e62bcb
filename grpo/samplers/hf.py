"""The transformers sampler, run on the policy itself (so weight sync costs nothing)."""

from __future__ import annotations

import time

import torch

from grpo.samplers.base import Sampler, SamplingConfig
from grpo.samplers.decode import sample_groups
from grpo.types import Rollout


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
    """Batched sampling on a transformers model (``grpo.samplers.decode.sample_groups``): temperature,
    top_p, top_k from ``config`` alone (the model's own generation defaults never leak in), stop at EOS
    and at ``config.stop`` strings."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: SamplingConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = sorted({*eos, tokenizer.eos_token_id})
        self.generator: torch.Generator | None = None  # the draws' generator (None: torch's global one)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """Each prompt prefilled once, its KV cache shared by its G completions, finished rows dropped
        from the batch (``grpo.samplers.decode.sample_groups``); returns the sampler's log-probs too."""
        return sample_groups(
            self.model, prompt_ids, num_generations, self.config, self.tokenizer, self.eos_ids, generator=self.generator
        )

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Nothing to copy: this sampler generates with the policy module itself."""
        start = time.perf_counter()
        self.model = model
        return time.perf_counter() - start
