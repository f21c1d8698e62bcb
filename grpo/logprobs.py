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
    logits: Tensor, targets: Tensor, temperature: float = 1.0, *, with_entropy: bool = False, chunk_rows: int = 4
) -> tuple[Tensor, Tensor | None]:
    """log softmax(logits / temperature) at ``targets``, and optionally the entropy, chunked over rows.

    Args:
        logits: ``[N, T, V]`` in any dtype.
        targets: ``[N, T]`` token ids.
        temperature: the sampling temperature (the sampler draws from softmax(logits / temperature)).
        with_entropy: also return H = -sum_v p_v log p_v per position (the entropy of the full
            next-token distribution, not the negative log-likelihood of the sampled token).
        chunk_rows: sequences per float32 chunk.
    Returns:
        ``(logprobs [N, T], entropy [N, T] or None)``, float32.
    """
    logps, entropies = [], []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start:start + chunk_rows].float() / temperature  # [c, T, V]
        log_p = torch.log_softmax(chunk, dim=-1)  # [c, T, V]
        logps.append(log_p.gather(-1, targets[start:start + chunk_rows, :, None]).squeeze(-1))  # [c, T]
        if with_entropy:
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
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of each completion token given the prompt and the completion so far.

    Args:
        prompt_ids, prompt_mask: ``[N, P]``, left-padded.
        completion_ids, completion_mask: ``[N, T]``, right-padded.
        temperature: logits are divided by it, matching the sampler.
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
    return token_logprobs_from_logits(logits, completion_ids, temperature, with_entropy=with_entropy, chunk_rows=chunk_rows)
