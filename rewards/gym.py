"""reasoning-gym reward: each task scored by reasoning-gym's own verifier."""

from __future__ import annotations

import json
import logging

from . import timelimit
from ._common import column, texts
from .extract import last_tag_content
from .registry import register_reward

logger = logging.getLogger(__name__)


def _entry(value, index: int) -> dict | None:
    """Validate one ``reasoning_gym_entry`` value (a dict, or its JSON text)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"reasoning_gym_entry[{index}] is a string but not JSON: {e}") from e
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("source_dataset"), str):
        raise ValueError(
            f"reasoning_gym_entry[{index}] must be a reasoning-gym entry dict with "
            f"metadata['source_dataset'], got {str(value)[:200]!r}"
        )
    return value


@register_reward("reasoning_gym")
def reasoning_gym_reward(
    completions, reasoning_gym_entry=None, *, timeout_seconds: float = 5.0, **kwargs
) -> list[float | None]:
    """Score with reasoning-gym's verifiers: ``reasoning_gym.get_score_answer_fn(
    entry["metadata"]["source_dataset"])(answer, entry)``, for any of its tasks (countdown,
    basic_arithmetic, ...).

    The answer is the content of the last ``<answer>...</answer>``, else the whole completion
    (stripped). Each verifier call runs in a helper process under a hard ``timeout_seconds``
    limit (several verifiers evaluate expressions with SymPy); a timeout scores 0.0. Scores are
    reasoning-gym's own, in [0, 1] (some tasks give small partial credit, e.g. countdown 0.05
    for a well-formed wrong expression).

    Args:
        completions: generated texts.
        reasoning_gym_entry: per completion, the full reasoning-gym entry (``question``,
            ``answer``, ``metadata`` with ``source_dataset``), as a dict or JSON string.
        timeout_seconds: hard limit in seconds for each verifier call.
        **kwargs: other columns, ignored.

    Returns:
        Per completion a float, or ``None`` where no entry is given.

    Raises:
        ValueError: a malformed entry, an unknown ``source_dataset``, or a misaligned column.
    """
    texts_ = texts(completions)
    entries = column("reasoning_gym_entry", reasoning_gym_entry, len(texts_))
    rewards: list[float | None] = []
    for i, (text, raw) in enumerate(zip(texts_, entries)):
        entry = _entry(raw, i)
        if entry is None:
            rewards.append(None)
            continue
        name = entry["metadata"]["source_dataset"]
        tagged = last_tag_content(text, "answer")
        answer = tagged if tagged is not None else text.strip()
        try:
            score = timelimit.call("rewards._gym", "score", (name, answer, entry), timeout_seconds)
        except timelimit.VerifierTimeout:
            logger.warning("reasoning-gym verifier for %s ran past %.3gs and was stopped", name, timeout_seconds)
            score = 0.0
        except timelimit.VerifierError as e:
            logger.warning("reasoning-gym verifier for %s failed: %s", name, e)
            score = 0.0
        if score is None:
            raise ValueError(f"reasoning_gym_entry[{i}]: '{name}' is not a reasoning-gym dataset")
        rewards.append(score)
    return rewards
