"""Format rewards: the ``<think>…</think><answer>…</answer>`` layout of DeepSeek-R1-Zero.

Template from DeepSeek-AI (2025), "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via
Reinforcement Learning", Table 1 and §2.2.2 (format reward); the exact strings follow open-r1.
"""

from __future__ import annotations

import re

from ._common import texts
from .registry import register_reward

THINK_PREFIX = "<think>\n"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")

_STRICT_RE = re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>", re.DOTALL)
_LENIENT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
# open-r1's tag_count strings: each tag with the newlines the template puts around it.
_STRICT_TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


def detect_think_prefill(prompt_text: str) -> bool:
    """Whether a rendered prompt already opened the thinking block.

    Some chat templates (DeepSeek-R1 distills, Qwen3 in thinking mode ...) end the generation
    prompt with ``<think>\\n``: the completion then starts *inside* the block and never
    contains the opening tag. Pass ``think_prefilled=True`` to ``format``/``tag_count`` then.

    Args:
        prompt_text: the prompt exactly as rendered for generation.

    Returns:
        True when the prompt, trailing whitespace aside, ends with ``<think>``.
    """
    return isinstance(prompt_text, str) and prompt_text.rstrip().endswith("<think>")


def _with_prefix(completions, think_prefilled: bool) -> list[str]:
    return [THINK_PREFIX + t if think_prefilled else t for t in texts(completions)]


def _tags_once(text: str) -> bool:
    return all(text.count(tag) == 1 for tag in TAGS)


@register_reward("format")
def format_reward(completions, *, strict: bool = True, think_prefilled: bool = False, **kwargs) -> list[float]:
    """1.0 when the whole completion has the R1 layout, else 0.0.

    Strict: the completion must match ``^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$``
    exactly (DOTALL; no text before or after, not even a trailing newline). Lenient
    (``strict=False``): any whitespace (or none) around and between the tags. In both modes each
    of the four tags must appear exactly once, so a second ``<answer>`` block cannot hide inside
    the first one's ``.*?``.

    Args:
        completions: generated texts.
        strict: exact newlines (True) or any whitespace (False).
        think_prefilled: the prompt ended with ``<think>`` (see :func:`detect_think_prefill`);
            the completion is scored as if preceded by ``<think>\\n``.
        **kwargs: columns, ignored.

    Returns:
        1.0 or 0.0 per completion.
    """
    pattern = _STRICT_RE if strict else _LENIENT_RE
    return [1.0 if _tags_once(t) and pattern.fullmatch(t) else 0.0 for t in _with_prefix(completions, think_prefilled)]


@register_reward("tag_count")
def tag_count_reward(completions, *, strict: bool = True, think_prefilled: bool = False, **kwargs) -> list[float]:
    """Partial format credit: 0.25 for each of the four tags that appears exactly once.

    Strict counts open-r1's newline-delimited forms (``"<think>\\n"``, ``"\\n</think>\\n"``,
    ``"\\n<answer>\\n"``, ``"\\n</answer>"``, as in open-r1's ``tag_count_reward``); lenient
    (``strict=False``) counts the bare tags.

    Args:
        completions: generated texts.
        strict: count the newline-delimited tags (True) or the bare tags (False).
        think_prefilled: score as if the completion were preceded by ``<think>\\n``
            (see :func:`detect_think_prefill`).
        **kwargs: columns, ignored.

    Returns:
        A value in {0, 0.25, 0.5, 0.75, 1.0} per completion.
    """
    tags = _STRICT_TAGS if strict else TAGS
    return [sum((0.25 for tag in tags if t.count(tag) == 1), 0.0) for t in _with_prefix(completions, think_prefilled)]
