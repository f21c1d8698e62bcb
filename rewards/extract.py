"""Answer extraction: ``<answer>`` tags, ``\\boxed{}``, GSM8K ``####`` and last numbers.

Pure Python, linear time (no regular expression here can backtrack badly), so it is safe to
run on any completion in the trainer's own process.
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_NUMBER_RE = re.compile(r"(?<![\w.])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")
_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_UNIT_WORDS_RE = re.compile(r"(\S+?)\s+([A-Za-z]{2,}\.?)(?:\s+([A-Za-z]{2,}\.?))?")
_NOT_UNITS = {"and", "or", "to", "plus", "minus", "times", "over", "of", "divided", "by", "mod"}


def last_tag_content(text: str, tag: str) -> str | None:
    """Content of the last *closed* ``<tag>...</tag>`` pair in ``text``, stripped.

    Args:
        text: any string.
        tag: the tag name without brackets, e.g. ``"answer"``.

    Returns:
        The stripped content, or ``None`` when there is no closed pair.
    """
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    start = text.rfind(f"<{tag}>", 0, close)
    if start < 0:
        return None
    return text[start + len(tag) + 2 : close].strip()


def _closing_braces(text: str) -> dict[int, int]:
    """Map each ``{`` index to the index of its matching ``}``, in one pass; ``\\{`` and
    ``\\}`` are skipped and unclosed groups are absent."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces allowed;
    ``\\boxed 5`` without braces gives ``"5"``). When the last one never closes (a truncated
    completion) the one before it is used. Linear time.

    Returns:
        The stripped content, or ``None`` when there is none.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    pairs = _closing_braces(text)
    for end in reversed(starts):
        rest = text[end : end + 64]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            open_at = end + len(rest) - len(stripped)
            if open_at in pairs:
                return text[open_at + 1 : pairs[open_at]].strip()
        elif rest[:1].isspace() and stripped:
            return stripped.split(None, 1)[0].rstrip("$.")
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (GSM8K style): an optional sign, digits with optional
    thousands commas, optional decimals. ``"... is 1,234.5."`` gives ``"1,234.5"``."""
    matches = _NUMBER_RE.findall(text)  # no groups: whole matches
    return matches[-1] if matches else None


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion, looked for in this order:

    1. the content of the last closed ``<answer>...</answer>`` (and within it, the last
       ``\\boxed{}`` if there is one);
    2. the last ``\\boxed{}``/``\\fbox{}`` anywhere;
    3. the last number in the text (GSM8K style).

    Returns:
        The answer string, or ``None`` when nothing was found.
    """
    tagged = last_tag_content(completion, "answer")
    if tagged is not None:
        return last_boxed(tagged) or tagged or None
    boxed = last_boxed(completion)
    if boxed:
        return boxed
    return last_number(completion)


def extract_gold(solution: str) -> str | None:
    """The gold answer of a dataset row, in this order: after the last GSM8K ``####``; the
    last ``<answer>`` content; the last ``\\boxed{}`` of a worked (MATH-style) solution; else the
    whole string as a bare value (``"72"``, ``"\\frac{1}{2}"``).

    Returns:
        The stripped gold answer, or ``None`` when empty.
    """
    if not isinstance(solution, str):
        solution = "" if solution is None else str(solution)
    if "####" in solution:
        return solution.rsplit("####", 1)[1].strip() or None
    tagged = last_tag_content(solution, "answer")
    if tagged:
        return last_boxed(tagged) or tagged
    return last_boxed(solution) or solution.strip() or None


def normalize_answer(answer: str) -> str:
    """Light clean-up before comparison: strips surrounding ``$``/``\\(...\\)``, a leading
    currency sign, a trailing period, LaTeX thousands separators (``1{,}000``, ``1\\,000``) and
    up to two trailing unit words after a number (``"18 dollars"`` → ``"18"``; connectives
    such as ``and``/``or`` are kept, so ``"3 or 4"`` stays as it is)."""
    s = answer.strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    s = s.replace("{,}", ",").replace("\\,", "").replace("\\!", "")
    s = re.sub(r"^(?:\\\$|\$)\s*", "", s)
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    m = _UNIT_WORDS_RE.fullmatch(s)
    if m and _PLAIN_NUMBER_RE.fullmatch(m.group(1)):
        words = {w.lower().rstrip(".") for w in m.groups()[1:] if w}
        if not words & _NOT_UNITS:
            s = m.group(1)
    return s


def plain_number(answer: str) -> str | None:
    """``answer`` without thousands commas if it is a plain decimal number (``"-1,000.50"``),
    else ``None``."""
    return answer.replace(",", "") if _PLAIN_NUMBER_RE.fullmatch(answer) else None


def think_content(completion: str) -> str:
    """The chain of thought of a completion: the text of all ``<think>...</think>`` blocks
    joined; with an unclosed ``<think>`` (truncated), what follows it; with only ``</think>``
    (the chat template opened the block), what precedes it; else the whole completion."""
    blocks = re.findall(r"<think>(.*?)</think>", completion, flags=re.DOTALL)
    if blocks:
        return "\n".join(blocks)
    if "<think>" in completion:
        return completion.split("<think>", 1)[1]
    if "</think>" in completion:
        return completion.split("</think>", 1)[0]
    return completion
