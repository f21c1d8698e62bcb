"""Answer extraction: ``<answer>`` tags, ``\\boxed{}`` runs, GSM8K ``####`` and the final statement.

Pure Python, linear time (no regular expression here can backtrack badly, and the fallback reads only
the last :data:`TAIL_CHARS` characters), so it is safe on any completion in the trainer's own process.
"""

from __future__ import annotations

import re

from .equivalence import THOUSANDS_RE

TAIL_CHARS = 16_000
"""The fallback (no tag, no box) looks for the final answer in this many characters at the end."""

GOLD_FORMATS = ("auto", "gsm8k", "math", "raw")
"""``answer_format`` values of :func:`extract_gold`."""

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
# What may stand between two boxes of one multi-part answer ("\boxed{2} and \boxed{3}", "$\boxed{1}$, $\boxed{2}$").
_CONNECTOR_RE = re.compile(
    r"(?:\s|\$|\\[()\[\]]|[,;&]|\\q?quad\b|\\[,;: ]|~|\\text\s*\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b)*",
    re.IGNORECASE,
)
_MAX_CONNECTOR = 40
# Openers of math spans (an escaped \$ is a dollar sign); each is closed by its own closer (see _math_spans).
_MATH_OPEN_RE = re.compile(r"(?<!\\)\$\$|(?<!\\)\$|\\\(|\\\[")
_MATH_CLOSE = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_INLINE = ("$", "\\(")  # an inline span does not cross a line break (as in math-verify)
# A number standing alone (not part of an exponent, subscript, LaTeX group or word), or a fraction a/b.
_NUMBER = r"[+-]?(?:\d{1,3}(?:,\d{3})+|[1-9]\d{0,2}(?: \d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+"
_STANDALONE_RE = re.compile(rf"(?<![\w.^_{{}}\\/])(?:{_NUMBER})(?:\s*/\s*\d+(?:\.\d+)?)?(?![\w^_{{}}/]|\.\d)")
# "The final answer is ...", "Answer: ..." (the minerva-style closing line, and plain ones).
_STATEMENT_RE = re.compile(r"(?:final\s+answer|\bthe\s+answer|\banswer)\s*(?:is\b|:)\s*:?", re.IGNORECASE)
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is\b|:)", re.IGNORECASE)
_CLEAN_START_RE = re.compile(r"\s*(?:\$|\\\(|\\\[|[+-]?\.?\d)")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\n")
_BARE_RE = re.compile(r"(?<![\\\w])(?!(?:or|and)\b)[A-Za-z]{2,}")
_ANCHOR_RE = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_WORD_RE = re.compile(r"(?<![\\\w])[A-Za-z]{2,}(?!\w)")
_PROSE_WORDS = 4


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


def boxes(text: str) -> list[tuple[int, int, str]]:
    """Every closed ``\\boxed{...}``/``\\fbox{...}`` that is not inside another, in order, as
    ``(start, end, content)`` (``text[start:end]`` is the whole box; nested braces allowed; ``\\boxed 5``
    without braces gives ``"5"``; a box inside the content is unwrapped). Unclosed boxes (a truncated
    completion) are left out. Linear time."""
    found: list[tuple[int, int, str]] = []
    pairs: dict[int, int] | None = None
    for m in _BOX_RE.finditer(text):
        if found and m.start() < found[-1][1]:
            continue  # inside the previous box
        rest = text[m.end() : m.end() + 64]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            pairs = _closing_braces(text) if pairs is None else pairs
            open_at = m.end() + len(rest) - len(stripped)
            if open_at in pairs:
                inner = text[open_at + 1 : pairs[open_at]]
                found.append((m.start(), pairs[open_at] + 1, _unbox(inner).strip()))
        elif rest[:1].isspace() and stripped:
            token = stripped.split(None, 1)[0]
            found.append((m.start(), m.end() + len(rest) - len(stripped) + len(token), token.rstrip("$.")))
    return [b for b in found if b[2]]


def _unbox(content: str) -> str:
    """``content`` without the ``\\boxed{...}`` wrappers inside it (``\\boxed{\\boxed{7}}`` is 7). Linear."""
    if not _BOX_RE.search(content):
        return content
    pairs = _closing_braces(content)
    drop: set[int] = set()
    for m in _BOX_RE.finditer(content):
        open_at = m.end() + len(content[m.end() : m.end() + 64]) - len(content[m.end() : m.end() + 64].lstrip())
        if open_at in pairs:
            drop.update(range(m.start(), open_at + 1))
            drop.add(pairs[open_at])
    return "".join(ch for i, ch in enumerate(content) if i not in drop)


def final_boxed(text: str, distinct: bool = False) -> str | None:
    """The final boxed answer: the last closed box, together with the boxes just before it that only
    connectors separate (whitespace, ``$``, commas, ``and``/``or``, ``\\quad`` ...), joined by ``", "``.
    ``"\\boxed{2} and \\boxed{3}"`` gives ``"2, 3"``; ``"\\boxed{3} wait, no: \\boxed{5}"`` gives ``"5"``;
    ``distinct`` drops repeated parts.

    Returns:
        The answer, or ``None`` when ``text`` has no closed box.
    """
    found = boxes(text)
    if not found:
        return None
    run = [found[-1]]
    for box in reversed(found[:-1]):
        gap = text[box[1] : run[0][0]]
        if len(gap) > _MAX_CONNECTOR or not _CONNECTOR_RE.fullmatch(gap):
            break
        run.insert(0, box)
    parts = [content for _, _, content in run]
    return ", ".join(dict.fromkeys(parts) if distinct else parts)


def final_statement(text: str) -> str | None:
    """The answer a completion ends on when it has no tag and no box, looked for in its last
    :data:`TAIL_CHARS` characters: whichever ends later of the last math span (``$...$``,
    ``\\(...\\)``, ``\\[...\\]``, whole), the last number standing alone outside math (an optional sign,
    digits with thousands commas or spaces, decimals, or a fraction ``a/b``; not part of an exponent,
    subscript, LaTeX group or word), and the statement after the last "the answer is" / "answer:" (its
    math span, or the text to the end of the sentence; the value it ends on when it has words). An
    explicit "Final Answer: ..." / "the final answer is ..." is the answer even if more follows.
    ``"So $x \\in (-6, 10)$."`` gives ``"x \\in (-6, 10)"``, never ``"10"``. An inline span broken across
    lines is not read at all.

    Returns:
        The answer, or ``None`` when there is none.
    """
    tail = text[-TAIL_CHARS:]
    spans = _math_spans(tail)
    candidates: list[tuple[int, str]] = [(end, content) for _, end, content, ok in spans if ok and content]
    outside, last_end = [], 0
    for start, end, _, _ in spans:
        outside.append((last_end, tail[last_end:start]))
        last_end = end
    outside.append((last_end, tail[last_end:]))
    for offset, chunk in reversed(outside):
        numbers = list(_STANDALONE_RE.finditer(chunk))
        if numbers:
            candidates.append((offset + numbers[-1].end(), numbers[-1].group()))
            break
    anchors = list(_STATEMENT_RE.finditer(tail))
    if anchors:
        end, statement = _statement_after(tail, anchors[-1].end(), spans)
        if statement and _FINAL_RE.match(anchors[-1].group()):
            return statement  # an explicit "Final Answer: ..." wins over whatever follows it
        candidates.append((end, statement))
    candidates = [c for c in candidates if c[1]]
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def _statement_after(text: str, pos: int, spans: list[tuple[int, int, str, bool]]) -> tuple[int, str]:
    """``(end, statement)`` of what follows an answer anchor at ``pos``: the math span starting there, or the
    text up to the end of the sentence (at most 200 characters; quotes and a final period stripped)."""
    start = len(text) - len(text[pos:].lstrip())
    for span_start, end, content, ok in spans:
        if span_start == start:
            return (end, content if ok else "")
    m = _SENTENCE_END_RE.search(text, start, start + 200)
    end = m.start() if m else min(len(text), start + 200)
    statement = text[start:end].strip().strip("\"'").strip()
    if _WORD_RE.search(statement):  # "The largest $n$ is 34": the value it ends on, if it has one
        return (end, final_statement(statement) or statement)
    return (end, statement)


def _math_spans(text: str) -> list[tuple[int, int, str, bool]]:
    """The math spans of ``text`` (``$$...$$``, ``$...$``, ``\\(...\\)``, ``\\[...\\]``; ``\\$`` is a
    dollar sign) as ``(start, end, stripped content, readable)``; an inline span that crosses a line
    break is not readable. Linear: a kind of opener whose closer is missing once is never looked for
    again (no later one can close either)."""
    spans, pos, dead = [], 0, set()
    while (m := _MATH_OPEN_RE.search(text, pos)) is not None:
        opener = m.group()
        pos = m.end()
        if opener in dead:
            continue
        close = _find_closer(text, _MATH_CLOSE[opener], pos)
        if close < 0:
            dead.add(opener)
            continue
        content = text[pos:close]
        pos = close + len(_MATH_CLOSE[opener])
        spans.append((m.start(), pos, content.strip(), not (opener in _INLINE and "\n" in content)))
    return spans


def _find_closer(text: str, closer: str, pos: int) -> int:
    """Index of the next ``closer`` at or after ``pos`` that is not an escaped ``\\$``; -1 if none."""
    while (i := text.find(closer, pos)) > 0 and closer[0] == "$" and text[i - 1] == "\\":
        pos = i + 1
    return i


def _is_prose(text: str) -> bool:
    """At least :data:`_PROSE_WORDS` words of two or more letters (LaTeX commands aside)."""
    return sum(1 for _ in zip(range(_PROSE_WORDS), _WORD_RE.finditer(text))) >= _PROSE_WORDS


def tagged_answer(content: str) -> str | None:
    """The answer inside an ``<answer>`` block: its final box run if it has one; else the content
    without a leading "the answer is"; when that is a sentence (4+ words) with a number or math in it,
    the sentence's final statement (``"So the total is 5 apples"`` gives ``"5"``); else the content
    whole (``"Even"``, ``"18 dollars"``, ``"x = 3"``)."""
    boxed = final_boxed(content)
    if boxed:
        return boxed
    content = _ANCHOR_RE.sub("", content, count=1).strip()
    if _is_prose(content):
        return final_statement(content) or content or None
    return content or None


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion, looked for in this order:

    1. the last closed ``<answer>...</answer>`` (see :func:`tagged_answer`);
    2. the final box run anywhere (see :func:`final_boxed`: the last ``\\boxed{}``/``\\fbox{}``, with
       the boxes joined to it by commas or "and" as one multi-part answer), unless an explicit
       "Final Answer: ..." with a math span or number follows the last box (then that statement);
    3. the whole completion when it is nothing but an answer (at most 200 characters, no ``$``, no
       word of two letters or more but "or"/"and": ``"\\frac{10}{9}"``, ``"3 or 4"``);
    4. the final statement: the last math span, standalone number or "the answer is ..." statement
       (see :func:`final_statement`).

    Returns:
        The answer string, or ``None`` when nothing was found.
    """
    tagged = last_tag_content(completion, "answer")
    if tagged is not None:
        return tagged_answer(tagged)
    found = boxes(completion)
    if found:
        after = completion[found[-1][1] :]
        final = list(_FINAL_RE.finditer(after))
        if final and _CLEAN_START_RE.match(after, final[-1].end()) and (statement := final_statement(after)):
            return statement  # "\\boxed{255} ... Final Answer: The final answer is $10,455$"
        return final_boxed(completion)
    bare = completion.strip()
    if len(bare) <= 200 and "$" not in bare and not _BARE_RE.search(bare) and bare[:1] not in ("", "<"):
        return bare  # the completion is nothing but an answer ("1 000", "\\frac{10}{9}", "3 or 4")
    return final_statement(completion)


def extract_gold(solution, answer_format: str = "auto") -> str | None:
    """The gold answer of a dataset row (the one gold-answer reader: data loading and rewards use it).

    Formats: ``gsm8k``, the text after the last ``####``; ``math``, the last ``<answer>`` block's
    content (its boxes if any), else the final box run of a worked solution as for completions, repeats
    dropped (``"\\boxed{2} and \\boxed{3}"`` gives ``"2, 3"``), else the statement after a closing "The final
    answer is" (minerva style), else the whole string as a bare value (``"72"``, ``"\\frac{1}{2}"``);
    ``raw``, the string as is; ``auto``, ``gsm8k`` when ``####`` appears and
    ``math`` otherwise. A plain number loses its thousands commas (``"1,234"`` gives ``"1234"``;
    ``"0,111"`` is not a number with thousands separators and stays as written).

    Args:
        solution: a string (other values are converted with ``str``; ``None`` is empty).
        answer_format: one of :data:`GOLD_FORMATS`.

    Returns:
        The stripped gold answer, or ``None`` when it is empty.

    Raises:
        ValueError: an unknown ``answer_format``, or ``gsm8k`` asked for and the text has no ``####``
            or nothing after it.
    """
    if answer_format not in GOLD_FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(GOLD_FORMATS)}, got {answer_format!r}")
    text = "" if solution is None else str(solution)
    fmt = answer_format if answer_format != "auto" else ("gsm8k" if "####" in text else "math")
    if fmt == "gsm8k":
        if "####" not in text:
            raise ValueError(f"no '####' in GSM8K answer {text[-80:]!r}")
        gold = text.rsplit("####", 1)[1].strip()
        if not gold and answer_format == "gsm8k":
            raise ValueError(f"nothing after '####' in GSM8K answer {text[-80:]!r}")
    elif fmt == "math":
        tagged = last_tag_content(text, "answer")
        gold = (final_boxed(tagged, distinct=True) or tagged) if tagged else final_boxed(text, distinct=True)
        if not tagged and not gold:
            gold = final_statement(text) if _FINAL_RE.search(text) else text.strip()
    else:
        gold = text.strip()
    if THOUSANDS_RE.fullmatch(gold):
        gold = gold.replace(",", "")
    return gold or None


def think_content(completion: str) -> str:
    """The chain of thought of a completion: the text of all ``<think>...</think>`` blocks
    joined; with an unclosed ``<think>`` (truncated), what follows it; with only ``</think>``
    (the chat template opened the block), what precedes it; else the whole completion."""
    blocks, pos = [], 0
    while (start := completion.find("<think>", pos)) >= 0:
        end = completion.find("</think>", start)
        if end < 0:
            break
        blocks.append(completion[start + len("<think>") : end])
        pos = end + len("</think>")
    if blocks:
        return "\n".join(blocks)
    if "<think>" in completion:
        return completion.split("<think>", 1)[1]
    if "</think>" in completion:
        return completion.split("</think>", 1)[0]
    return completion
