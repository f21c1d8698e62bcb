"""Per-token log-probs (and entropies) of completions under a model, without [N, T, V] float32 logits.

The forward pass keeps only the logits that predict completion tokens (``logits_to_keep``), and the
float32 log-softmax runs over ``chunk_rows`` sequences at a time, so the largest float32 tensor is
``[chunk_rows, T, V]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions ``[N, L]`` that count only real tokens, as ``generate`` computes them for left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs_from_logits(
    logits: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    chunk_rows: int = 4,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """log softmax(logits / temperature) at ``targets``, and optionally the entropy, chunked over rows.

    Args:
        logits: ``[N, T, V]`` in any dtype.
        targets: ``[N, T]`` token ids.
        temperature: the sampling temperature (the sampler draws from softmax(logits / temperature)).
        with_entropy: also return H = -sum_v p_v log p_v per position (the entropy of the full
            next-token distribution, not the negative log-likelihood of the sampled token).
        chunk_rows: sequences per float32 chunk.
        entropy_grad: False computes the entropy without autograd (a detached metric): the same values,
            and neither the backward pass nor the saved ``[c, T, V]`` tensors it would need.
    Returns:
        ``(logprobs [N, T], entropy [N, T] or None)``, float32.
    """
    logps, entropies = [], []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start : start + chunk_rows].float()  # [c, T, V]
        if temperature != 1.0:
            chunk = chunk / temperature
        log_p = torch.log_softmax(chunk, dim=-1)  # [c, T, V]
        logps.append(log_p.gather(-1, targets[start : start + chunk_rows, :, None]).squeeze(-1))  # [c, T]
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                entropies.append(-(log_p.exp() * log_p).sum(-1))  # [c, T]
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    chunk_rows: int = 4,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of each completion token given the prompt and the completion so far.

    Args:
        prompt_ids, prompt_mask: ``[N, P]``, left-padded.
        completion_ids, completion_mask: ``[N, T]``, right-padded.
        temperature: logits are divided by it, matching the sampler.
        entropy_grad: False returns the entropy detached (cheaper when it is only a metric).
    Returns:
        ``(logprobs [N, T], entropy [N, T] or None)``; values at padded positions are meaningless
        and must be masked by the caller.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+T]
    attention_mask = torch.cat([prompt_mask, completion_mask.long()], dim=1)  # [N, P+T]
    t = completion_ids.shape[1]
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=t + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1]  # [N, T, V]: the logit at position i predicts token i+1
    return token_logprobs_from_logits(
        logits, completion_ids, temperature, with_entropy=with_entropy, chunk_rows=chunk_rows, entropy_grad=entropy_grad
    )


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Runs of consecutive rows with the same prompt (a GRPO group, or part of one).

    Returns:
        ``(first [U], inverse [N])``: the first row of each run, and each row's run index.
    """
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)  # [N-1]
    starts = torch.cat([same.new_ones(1), ~same])  # [N]
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1


def completion_logprobs_shared_prompts(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    chunk_rows: int = 4,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """:func:`completion_logprobs` with each distinct prompt run through the model once.

    The G completions of a prompt are consecutive rows with the same prompt. The prompts of a run are
    forwarded once (``U`` rows instead of ``N``), their KV cache is indexed out to the ``N`` rows
    (differentiably: gradients of every completion flow back into the one prompt pass), and only the
    completion tokens are forwarded on top of it. Same values as :func:`completion_logprobs` up to
    float32 rounding, same gradients; it saves the prompt share of the layer compute ``(G - 1) / G``.
    Falls back to :func:`completion_logprobs` when no two rows share a prompt or when the model's cache
    is not made of plain full-attention layers.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    first, inverse = prompt_groups(prompt_ids, prompt_mask)
    cache = DynamicCache(config=model.config) if hasattr(model, "config") else None
    if (
        len(first) == len(inverse)
        or cache is None
        or not cache.layers
        or not all(type(layer) is DynamicLayer for layer in cache.layers)
    ):
        return completion_logprobs(
            model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            temperature,
            with_entropy=with_entropy,
            chunk_rows=chunk_rows,
            entropy_grad=entropy_grad,
        )
    attention_mask = torch.cat([prompt_mask, completion_mask.long()], dim=1)  # [N, P+T]
    positions = position_ids_from_mask(attention_mask)  # [N, P+T]
    p = prompt_ids.shape[1]
    prefix = model(
        input_ids=prompt_ids[first],
        attention_mask=prompt_mask[first],
        position_ids=positions[first, :p],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prefix.past_key_values
    cache.batch_select_indices(inverse)  # [U, ...] -> [N, ...]
    out = model(
        input_ids=completion_ids,
        attention_mask=attention_mask,
        position_ids=positions[:, p:],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=completion_ids.shape[1],
    )
    # the last prompt position predicts completion token 0; completion position i predicts token i+1
    head = token_logprobs_from_logits(
        prefix.logits[:, -1:][inverse],
        completion_ids[:, :1],
        temperature,
        with_entropy=with_entropy,
        chunk_rows=chunk_rows,
        entropy_grad=entropy_grad,
    )
    tail = token_logprobs_from_logits(
        out.logits[:, :-1],
        completion_ids[:, 1:],
        temperature,
        with_entropy=with_entropy,
        chunk_rows=chunk_rows,
        entropy_grad=entropy_grad,
    )
    logprobs = torch.cat([head[0], tail[0]], dim=1)  # [N, T]
    return logprobs, (torch.cat([head[1], tail[1]], dim=1) if with_entropy else None)


def logprob_function(num_processes: int, gradient_checkpointing: bool, deepspeed: bool):
    """The log-prob function of a run: :func:`completion_logprobs_shared_prompts` (each distinct prompt through
    the model once per micro-batch, its G completions sharing its KV cache) on one process without gradient
    checkpointing (which turns the cache off) or DeepSpeed (two forward calls per backward do not mix with DDP's
    or DeepSpeed's hooks); :func:`completion_logprobs` otherwise."""
    if num_processes == 1 and not gradient_checkpointing and not deepspeed:
        return completion_logprobs_shared_prompts
    return completion_logprobs


def batch_logprobs(logprob_fn, model: torch.nn.Module, batch, chunk_size: int, temperature: float) -> Tensor:
    """Log-probs ``[N, T]`` of a whole :class:`grpo.types.TrainBatch` under ``model``, ``chunk_size`` sequences
    per forward pass (each chunk trimmed of all-padding columns, then padded back to ``T``); ``logprob_fn`` is
    :func:`logprob_function`'s choice."""
    parts, width = [], batch.completion_ids.shape[1]
    for chunk in batch.split(chunk_size):
        lp, _ = logprob_fn(
            model, chunk.prompt_ids, chunk.prompt_mask, chunk.completion_ids, chunk.completion_mask, temperature
        )
        parts.append(torch.nn.functional.pad(lp, (0, width - lp.shape[1])))  # [c, T]
    return torch.cat(parts)
