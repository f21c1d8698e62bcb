"""A faster sampling loop for transformers causal LMs: G completions per prompt from one prefill.

``model.generate`` on ``B*G`` repeated prompts pays for the prompt ``G`` times and keeps finished rows
in the batch until the longest completion ends. :func:`sample_groups` instead

1. prefills the ``B`` distinct prompts once (left-padded; position ids ``cumsum(mask) - 1`` as in
   ``generate``) and repeats the KV cache and the last logits ``G`` times (``repeat_interleave``, so
   the ``G`` completions of a prompt are consecutive rows);
2. decodes with its own loop: temperature, then top-k, then top-p, exactly as transformers'
   ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper`` (the order ``generate``
   applies them), then one categorical draw per row (inverse CDF: the same distribution as
   ``torch.multinomial``, about 10x cheaper on CPU); temperature 0 is greedy (``argmax`` of the raw logits);
3. drops a row from the batch (and from the cache) as soon as it samples an EOS (or completes a stop
   string of ``config.stop``), and trims leading padding columns that no remaining row needs, so no
   compute is spent on finished rows; the KV cache has room for the whole completion, so a step
   writes one position instead of concatenating the cache;
4. records the log-prob of every sampled token under ``softmax(logits / temperature)`` over the whole
   vocabulary (before top-k/top-p filtering): the quantity ``grpo.logprobs.completion_logprobs``
   computes for the loss (greedy: under softmax(logits)).

The output contract is that of ``HFSampler.generate``; ``HFSampler.generate`` can simply return
``sample_groups(self.model, prompt_ids, num_generations, self.config, self.tokenizer, self.eos_ids)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer

from grpo.samplers.base import SamplingConfig
from grpo.types import Rollout


def default_eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """Every EOS id the model's generation config declares, plus the tokenizer's (as ``HFSampler``)."""
    config = getattr(model, "generation_config", None)
    eos = config.eos_token_id if config is not None else None
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return sorted({*eos, tokenizer.eos_token_id} - {None})


def top_k_filter(scores: Tensor, top_k: int) -> Tensor:
    """``TopKLogitsWarper``: set every score below the k-th largest of its row to -inf (ties kept)."""
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # [N, 1]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: Tensor, top_p: float) -> Tensor:
    """``TopPLogitsWarper`` (min_tokens_to_keep=1): keep the smallest set of most likely tokens whose
    probability mass reaches ``top_p``; the most likely token is always kept."""
    if top_p >= 1.0:
        return scores
    sorted_scores, sorted_idx = torch.sort(scores, descending=False)  # [N, V]
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # [N, V]
    remove = cumulative <= (1 - top_p)  # [N, V] in sorted order
    remove[..., -1:] = False
    remove = remove.scatter(-1, sorted_idx, remove)  # back to vocabulary order
    return scores.masked_fill(remove, float("-inf"))


def categorical(
    weights: Tensor, generator: torch.Generator | None = None, block: int = 256, uniforms: Tensor | None = None
) -> Tensor:
    """One draw per row from the categorical distribution proportional to ``weights`` ``[N, V]`` (>= 0).

    Inverse CDF in two levels: float64 sums of blocks of ``block`` tokens, one uniform per row picks a
    block, a cumulative sum inside that block picks the token. The same distribution as
    ``torch.multinomial(weights, 1)``, which on CPU draws V exponentials per row (the bulk of a
    decoding step for a small model); a token of weight 0 is never drawn. ``uniforms`` ``[N]`` in
    [0, 1) replaces the draws from ``generator``.
    """
    n, v = weights.shape
    if v % block:
        weights = torch.nn.functional.pad(weights, (0, block - v % block))
    blocks = weights.reshape(n, -1, block)  # [N, nb, block]
    block_sums = blocks.sum(-1).double()  # [N, nb]
    cdf = block_sums.cumsum(-1)  # [N, nb]
    if uniforms is None:
        uniforms = torch.rand(n, dtype=torch.float64, device=weights.device, generator=generator)
    u = uniforms.double()[:, None] * cdf[:, -1:]  # [N, 1]
    b = torch.searchsorted(cdf, u, right=True).clamp(max=blocks.shape[1] - 1)  # [N, 1] block index
    inside = blocks[torch.arange(n, device=weights.device), b.squeeze(1)]  # [N, block]
    residual = u - (cdf.gather(-1, b) - block_sums.gather(-1, b))  # [N, 1] mass left to cover inside the block
    j = torch.searchsorted(inside.double().cumsum(-1), residual, right=True).clamp(max=block - 1)  # [N, 1]
    bad = inside.gather(-1, j) <= 0  # only when float64 rounding lands past the block's last token
    if bool(bad.any()):
        j = torch.where(bad, inside.argmax(-1, keepdim=True), j)
    return (b * block + j).squeeze(1)


def next_tokens(
    logits: Tensor, config: SamplingConfig, generator: torch.Generator | None = None, uniforms: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One decoding step on ``[N, V]`` logits: the chosen tokens ``[N]`` and their log-probs ``[N]``.

    The log-prob is under softmax(logits / temperature) over the full vocabulary (temperature 1 when
    greedy), i.e. before top-k/top-p filtering, as the loss computes it. ``uniforms`` ``[N]``: the
    random numbers of the draws (default: fresh ones from ``generator``).
    """
    scores = logits.float()  # [N, V]
    if config.temperature > 0 and config.temperature != 1.0:
        scores = scores / config.temperature
    peak = scores.amax(dim=-1, keepdim=True)  # [N, 1]
    weights = (scores - peak).exp_()  # [N, V] unnormalised probabilities
    lse = peak + weights.sum(-1, keepdim=True).log()  # [N, 1] logsumexp(scores)
    if config.temperature > 0:
        if config.top_k > 0 or config.top_p < 1.0:
            kept = top_p_filter(top_k_filter(scores, config.top_k), config.top_p) > float("-inf")  # [N, V]
            weights = weights.masked_fill_(~kept, 0.0)
        tokens = categorical(weights, generator, uniforms=uniforms)  # [N]
    else:
        tokens = scores.argmax(dim=-1)  # [N]
    logprobs = (scores.gather(-1, tokens[:, None]) - lse).squeeze(1)  # [N] = log_softmax(scores)[token]
    return tokens, logprobs


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists into ids ``[N, L]`` and an attention mask ``[N, L]`` (1 on real tokens)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


class _RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in a buffer with room for the whole completion, so a
    decoding step writes one position in place instead of ``torch.cat`` -ing the whole cache (which
    costs O(length) per step per layer, about a tenth of a decoding step for SmolLM2-135M).

    ``keys`` / ``values`` stay views of the filled part; any operation that replaces them (row
    selection, repetition, trimming) drops the buffer, and the next update makes a new one.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity  # positions the buffer should hold in all
        self._buffers: tuple[Tensor, Tensor] | None = None

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        if self._buffers is None or length + new > self._buffers[0].shape[-2]:
            size = max(self.capacity, length + new)
            buffers = []
            for old, states in ((self.keys, key_states), (self.values, value_states)):
                buffer = states.new_empty((*states.shape[:-2], size, states.shape[-1]))
                if length:
                    buffer[..., :length, :] = old
                buffers.append(buffer)
            self._buffers = (buffers[0], buffers[1])
        k_buf, v_buf = self._buffers
        k_buf[..., length : length + new, :] = key_states
        v_buf[..., length : length + new, :] = value_states
        self.keys, self.values = k_buf[..., : length + new, :], v_buf[..., : length + new, :]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._buffers = None

    def batch_select_indices(self, indices: Tensor) -> None:
        super().batch_select_indices(indices)
        self._buffers = None

    def trim_left(self, columns: int) -> None:
        if self.is_initialized and self.keys.numel():
            self.keys, self.values = self.keys[..., columns:, :], self.values[..., columns:, :]
        self.capacity -= columns
        self._buffers = None


def _new_cache(model: torch.nn.Module, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` for ``model``; with room for ``capacity`` positions when every layer is a plain
    full-attention ``DynamicLayer`` (sliding-window and linear-attention layers keep their own)."""
    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_RoomyLayer(capacity) for _ in cache.layers]
    return cache


def _trim_left(cache, mask: Tensor) -> Tensor:
    """Drop leading columns that are padding in every remaining row from the mask and the KV cache
    (only when every layer is a ``_RoomyLayer``: other layers keep their own bookkeeping)."""
    keep_from = int((mask.sum(0) > 0).int().argmax())
    if keep_from == 0 or not all(isinstance(layer, _RoomyLayer) for layer in cache.layers):
        return mask
    for layer in cache.layers:
        layer.trim_left(keep_from)
    return mask[:, keep_from:]


def _hits_stop(tokenizer, completion_ids: Tensor, rows: Tensor, steps: int, stop: tuple[str, ...]) -> Tensor:
    """[n_active] bool: the decoded completion so far (``skip_special_tokens``) of each active row
    contains one of the ``stop`` strings (the rule of ``HFSampler``: the row ends at the token that
    completes the first stop string)."""
    texts = tokenizer.batch_decode(completion_ids[rows, :steps].tolist(), skip_special_tokens=True)
    return torch.tensor([any(s in text for s in stop) for text in texts], dtype=torch.bool, device=rows.device)


def _prefill(model: torch.nn.Module, ids: Tensor, mask: Tensor, g: int, capacity: int) -> tuple[Tensor, object, Tensor]:
    """One forward pass over the B left-padded prompts ``[B, P]``; returns the next-token logits ``[N, V]``
    (float32), the KV cache and the attention mask ``[N, P]``, each repeated G times (N = B*G rows)."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        past_key_values=_new_cache(model, capacity),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.past_key_values
    logits = out.logits[:, -1].float().repeat_interleave(g, dim=0)  # [N, V]: one prefill per prompt
    cache.batch_repeat_interleave(g)
    return logits, cache, mask.repeat_interleave(g, dim=0)


@torch.no_grad()
def sample_groups(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    num_generations: int,
    config: SamplingConfig,
    tokenizer,
    eos_ids: list[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    drop_finished: bool = True,
) -> Rollout:
    """Sample ``num_generations`` (G) completions for each of the B prompts.

    Args:
        model: a transformers causal LM (or a peft model around one) that takes ``past_key_values``,
            ``position_ids`` and ``logits_to_keep``.
        prompt_ids: B prompts as token-id lists (no padding).
        num_generations: G.
        config: max_completion_length, temperature (0 = greedy), top_p, top_k (0 = off), and stop
            strings (``config.stop`` when the config has it): a row also ends at the token that
            completes one of them (kept; the row counts as finished, not truncated).
        tokenizer: gives the pad id and decodes the texts (``skip_special_tokens=True``).
        eos_ids: tokens that end a completion (default: the model's generation config and the tokenizer's).
        generator: torch generator for the categorical draws (default: the global one).
        drop_finished: remove finished rows from the batch and cache (False decodes every row to the
            end, as ``generate`` does; for comparisons).
    Returns:
        ``Rollout`` of N = B*G rows (prompt b at rows b*G .. b*G+G-1): left-padded prompt ids/mask
        ``[N, P]``; right-padded completion ids ``[N, T]`` (pad after the end), mask ``[N, T]`` (1 up to
        and including the first EOS or the token completing a stop string), truncated ``[N]`` (neither
        came), decoded texts, and ``sampler_logprobs [N, T]`` (0 on padding). T is the number of
        decoding steps taken (the longest completion).
    """
    pad_id = tokenizer.pad_token_id
    eos_ids = default_eos_ids(model, tokenizer) if eos_ids is None else list(eos_ids)
    stop = tuple(getattr(config, "stop", ()) or ())
    g, t_max = num_generations, config.max_completion_length
    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id)  # [B, P]
    n = ids.shape[0] * g
    completion_ids = torch.full((n, t_max), pad_id, dtype=torch.long, device=device)  # [N, T]
    logprobs = torch.zeros((n, t_max), dtype=torch.float32, device=device)  # [N, T]
    lengths = torch.full((n,), t_max, dtype=torch.long, device=device)  # [N] tokens kept per row
    finished = torch.zeros(n, dtype=torch.bool, device=device)  # [N] ended at EOS or a stop string
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    steps = 0
    try:
        logits, cache, attn = _prefill(model, ids.to(device), mask.to(device), g, ids.shape[1] + t_max)
        rows = torch.arange(n, device=device)  # [n_active] the output row of each batch row
        for step in range(t_max):
            # one uniform per row of the whole rollout and step, so a row's draws do not depend on which
            # other rows have finished (the same seed gives the same row with or without stop strings)
            uniforms = (
                torch.rand(n, dtype=torch.float64, device=device, generator=generator)[rows]
                if config.temperature > 0
                else None
            )
            tokens, token_logprobs = next_tokens(logits, config, generator, uniforms)  # [n_active]
            steps = step + 1
            live = ~finished[rows]  # [n_active] (all True when finished rows are dropped)
            completion_ids[rows[live], step] = tokens[live]
            logprobs[rows[live], step] = token_logprobs[live]
            done = torch.isin(tokens, eos) & live  # [n_active]
            if stop:
                done |= live & _hits_stop(tokenizer, completion_ids, rows, steps, stop)
            lengths[rows[done]] = steps
            finished[rows[done]] = True
            if step == t_max - 1 or bool(finished.all()):
                break
            if drop_finished and bool(done.any()):
                keep = (~done).nonzero().squeeze(1)  # [n_keep]
                cache.batch_select_indices(keep)
                rows, tokens, attn = rows[keep], tokens[keep], attn[keep]
                attn = _trim_left(cache, attn)
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
            if not drop_finished:  # like generate: finished rows go on decoding pad tokens
                tokens = torch.where(finished[rows], pad_id, tokens)
            out = model(
                input_ids=tokens[:, None],
                attention_mask=attn,
                position_ids=attn.sum(-1, keepdim=True) - 1,
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1]
            del out
    finally:
        model.train(was_training)
    completion_mask = (torch.arange(steps, device=device)[None, :] < lengths[:, None]).long()  # [N, T]
    completion_ids = completion_ids[:, :steps].masked_fill(completion_mask == 0, pad_id)
    logprobs = logprobs[:, :steps].masked_fill(completion_mask == 0, 0.0)
    texts = tokenizer.batch_decode(completion_ids.cpu(), skip_special_tokens=True)
    prompts = (ids.repeat_interleave(g, dim=0).to(device), mask.repeat_interleave(g, dim=0).to(device))  # [N, P]
    return Rollout(*prompts, completion_ids, completion_mask, ~finished, texts, logprobs)
