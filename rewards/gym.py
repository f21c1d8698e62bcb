"""reasoning-gym reward: each task scored by reasoning-gym's own verifier."""

from __future__ import annotations

import json
import logging

from . import timelimit
from ._common import column, texts
from .accuracy import check_timeouts
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


@register_reward("reasoning_gym", check=check_timeouts)
def reasoning_gym_reward(
    completions,
    reasoning_gym_entry=None,
    *,
    timeout_seconds: float = 5.0,
    batch_timeout_seconds: float = 30.0,
    **kwargs,
) -> list[float | None]:
    """Score with reasoning-gym's verifiers: ``reasoning_gym.get_score_answer_fn(
    entry["metadata"]["source_dataset"])(answer, entry)``, for any of its tasks (countdown,
    basic_arithmetic, ...).

    The answer is the content of the last ``<answer>...</answer>``, else the whole completion
    (stripped). The verifier calls run in helper processes (several verifiers evaluate expressions
    with SymPy) under the same limits as ``accuracy`` (see :func:`rewards.timelimit.run_batch`); a call
    that times out or fails scores 0.0. Scores are reasoning-gym's own, in [0, 1] (some tasks give small
    partial credit, e.g. countdown 0.05 for a well-formed wrong expression).

    Args:
        completions: generated texts.
        reasoning_gym_entry: per completion, the full reasoning-gym entry (``question``,
            ``answer``, ``metadata`` with ``source_dataset``), as a dict or JSON string.
        timeout_seconds: limit in seconds for each verifier call.
        batch_timeout_seconds: limit in seconds for all the verifier calls of this batch.
        **kwargs: other columns, ignored.

    Returns:
        Per completion a float, or ``None`` where no entry is given.

    Raises:
        ValueError: a malformed entry, an unknown ``source_dataset``, or a misaligned column.
    """
    check_timeouts(timeout_seconds=timeout_seconds, batch_timeout_seconds=batch_timeout_seconds)
    texts_ = texts(completions)
    entries = [_entry(raw, i) for i, raw in enumerate(column("reasoning_gym_entry", reasoning_gym_entry, len(texts_)))]
    todo = [i for i, e in enumerate(entries) if e is not None]
    calls = []
    for i in todo:
        tagged = last_tag_content(texts_[i], "answer")
        calls.append(
            (entries[i]["metadata"]["source_dataset"], tagged if tagged is not None else texts_[i].strip(), entries[i])
        )
    outcomes = timelimit.run_batch(
        "rewards._gym", "score", calls, timeout_s=timeout_seconds, batch_timeout_s=batch_timeout_seconds
    )
    rewards: list[float | None] = [None] * len(texts_)
    failed = 0
    for i, (status, value) in zip(todo, outcomes):
        if status == "ok" and value is None:
            name = entries[i]["metadata"]["source_dataset"]
            raise ValueError(f"reasoning_gym_entry[{i}]: '{name}' is not a reasoning-gym dataset")
        failed += status != "ok"
        rewards[i] = float(value) if status == "ok" else 0.0
    if failed:
        logger.warning("reasoning-gym: %d of %d verifier calls timed out or failed; scored 0", failed, len(todo))
    return rewards
